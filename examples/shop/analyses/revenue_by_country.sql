-- Revenue per customer country, for countries with at least $min_revenue.
-- Served by dbt-mxcp as the tool `revenue_by_country` (see analyses/properties.yml):
-- the Jinja (ref, and project macros such as money()) is compiled as dbt compiles it,
-- and $min_revenue stays in the SQL as a DuckDB named parameter, bound at call time.
select
    country,
    cast(count(*) as integer) as customers,
    cast(sum(lifetime_orders) as integer) as orders,
    {{ money('sum(lifetime_revenue)') }} as revenue,
    {{ money('sum(lifetime_revenue) / nullif(sum(lifetime_orders), 0)') }} as revenue_per_order
from {{ ref('customers') }}
group by country
having sum(lifetime_revenue) >= $min_revenue
order by revenue desc, country
