-- One row per person, with the team's floor. Contract enforced.
{{ config(materialized='table') }}

select
    p.id,
    p.name,
    p.email,
    p.team,
    t.floor,
    p.salary,
    p.joined,
    cast(extract(year from p.joined) as integer) as joined_year,
    p.active
from {{ ref('people') }} as p
left join {{ ref('teams') }} as t on t.team = p.team
