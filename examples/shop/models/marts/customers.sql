-- One row per customer with lifetime figures. Returned orders count as orders
-- but not as revenue.
with order_stats as (
    select
        customer_id,
        count(*) as lifetime_orders,
        sum(case when status <> 'returned' then order_total else 0 end) as lifetime_revenue,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from {{ ref('orders') }}
    group by customer_id
)

select
    c.customer_id,
    c.first_name,
    c.last_name,
    c.email,
    c.country,
    c.segment,
    c.signup_date,
    cast(coalesce(s.lifetime_orders, 0) as integer) as lifetime_orders,
    {{ money('coalesce(s.lifetime_revenue, 0)') }} as lifetime_revenue,
    s.first_order_date,
    s.last_order_date
from {{ ref('stg_customers') }} as c
left join order_stats as s using (customer_id)
