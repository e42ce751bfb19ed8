-- Ephemeral: inlined as a CTE into team_stats; no relation, so no endpoints.
{{ config(materialized='ephemeral') }}

select id, team
from {{ ref('people') }}
where active
