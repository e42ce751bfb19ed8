-- Singular data test: every person of the people seed is counted in exactly one team.
select total
from (select sum(headcount) as total from {{ ref('team_stats') }})
where total != (select count(*) from {{ ref('people') }})
