-- One row per customer: paid orders and their total, exact to the cent.
select
    c.id as customer_id,
    c.name,
    c.country,
    count(o.id) as paid_orders,
    cast(coalesce(sum(o.amount), 0) as numeric(12, 2)) as paid_total,
    cast(min(o.ordered_at) as date) as first_order
from {{ ref('customers') }} as c
left join {{ ref('orders') }} as o
    on o.customer_id = c.id and o.status = 'paid'
group by c.id, c.name, c.country
