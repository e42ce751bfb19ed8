-- Tool greet_person (on model people_enriched): {{ this }} is the host model's relation.
select
    id,
    '{{ env_var("DBT_MXCP_IT_GREETING", "hello") }}' || ', ' || name || '!' as greeting
from {{ this }}
where id = $id
