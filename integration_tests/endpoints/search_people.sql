-- Tool search_people (on model people_enriched). Parameters are bound, never spliced.
select id, name, email, team, salary, joined, active
from {{ ref('people_enriched') }}
where name ilike '%' || $name_query || '%'
  and (coalesce(len($teams), 0) = 0 or list_contains($teams, team))
  and (not $active_only or active)
  and salary >= $min_salary
  and salary >= {{ var('min_amount') }}
order by id
limit $limit
