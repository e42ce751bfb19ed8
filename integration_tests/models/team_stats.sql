-- One row per team in the teams seed (legal has nobody: headcount 0, avg_salary null).
{{ config(materialized='view') }}

with members as (
    select team, count(*) as headcount, sum(salary) as total_salary
    from {{ ref('people_enriched') }}
    group by team
),

active as (
    select team, count(*) as active_count
    from {{ ref('int_active_people') }}
    group by team
)

select
    t.team,
    t.floor,
    cast(coalesce(m.headcount, 0) as integer) as headcount,
    cast(coalesce(a.active_count, 0) as integer) as active_count,
    cast(coalesce(m.total_salary, 0) as decimal(12, 2)) as total_salary,
    cast(m.total_salary / m.headcount as decimal(12, 2)) as avg_salary
from {{ ref('teams') }} as t
left join members as m on m.team = t.team
left join active as a on a.team = t.team
