-- Tool `search_customers` (declared on the `customers` model in models/marts/schema.yml).
-- Lives outside model-paths so that dbt does not build it as a model; dbt-mxcp renders
-- ref() from the manifest and binds $query and $limit as DuckDB parameters.
select
    customer_id,
    first_name,
    last_name,
    email,
    country,
    segment,
    lifetime_orders,
    lifetime_revenue,
    last_order_date
from {{ ref('customers') }}
where contains(lower(first_name || ' ' || last_name), lower($query))
order by customer_id
limit $limit
