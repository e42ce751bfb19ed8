-- One row per order, with its size and value.
with items as (
    select
        order_id,
        sum(quantity) as item_count,
        sum(line_total) as order_total
    from {{ ref('stg_order_items') }}
    group by order_id
)

select
    o.order_id,
    o.customer_id,
    o.order_date,
    o.status,
    cast(coalesce(i.item_count, 0) as integer) as item_count,
    {{ money('coalesce(i.order_total, 0)') }} as order_total
from {{ ref('stg_orders') }} as o
left join items as i using (order_id)
