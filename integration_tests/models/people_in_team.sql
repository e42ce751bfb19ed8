-- dbt-duckdb table_function: a DuckDB table macro `people_in_team(p_team)`.
-- The parameter is referenced by its bare name (a macro parameter), not as $p_team;
-- it is named p_team so that it cannot be confused with the column `team`.
-- Call it as: select * from "<db>"."main"."people_in_team"('eng')
{{ config(materialized='table_function', parameters=['p_team']) }}

select id, name, team, salary
from {{ ref('people_enriched') }}
where team = p_team
order by id
