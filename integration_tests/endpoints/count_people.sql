-- Tool count_people (on model team_stats): a scalar (one row, one column).
select cast(count(*) as integer) as headcount
from {{ ref('people_enriched') }}
where team = $team
  and ($include_inactive or active)
  and salary >= {{ var('min_amount') }}
