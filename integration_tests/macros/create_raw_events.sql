{#- Creates the table behind the dbt source `raw.raw_events` (on-run-start).
    The schema is the target's, so the `alt` target gets its own copy. -#}
{% macro create_raw_events() %}
create schema if not exists {{ target.schema }};
create table if not exists {{ target.schema }}.raw_events as
select * from (values
    (1, 1, 'login',    DATE '2024-01-01'),
    (2, 1, 'purchase', DATE '2024-01-02'),
    (3, 2, 'login',    DATE '2024-01-02'),
    (4, 3, 'login',    DATE '2024-01-03'),
    (5, 3, 'logout',   DATE '2024-01-03'),
    (6, 6, 'purchase', DATE '2024-01-05'),
    (7, 2, 'logout',   DATE '2024-01-06'),
    (8, 8, 'login',    DATE '2024-01-08')
) t(event_id, person_id, kind, day)
{% endmacro %}
