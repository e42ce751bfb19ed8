-- Analysis behind the tool salary_band (analyses/properties.yml).
-- $band_min / $band_max are DuckDB named parameters: plain text to dbt,
-- bound by dbt-mxcp at call time. var('min_amount') is rendered by dbt.
select id, name, team, salary
from {{ ref('people_enriched') }}
where salary >= {{ var('min_amount') }}
  and salary >= $band_min
  and salary < $band_max
order by salary desc, id
