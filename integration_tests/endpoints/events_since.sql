-- Tool events_since (on source raw.raw_events): a source joined with a model.
select e.event_id, e.day, e.kind, p.name
from {{ source('raw', 'raw_events') }} as e
join {{ ref('people_enriched') }} as p on p.id = e.person_id
where e.kind = $kind
  and e.day >= cast($since as date)
order by e.day, e.event_id
