-- Revenue per product per calendar month (returned orders excluded).
-- Only months in which the product sold appear.
select
    p.product_id,
    p.sku,
    p.product_name,
    p.category,
    cast(date_trunc('month', o.order_date) as date) as sales_month,
    cast(count(distinct o.order_id) as integer) as order_count,
    cast(sum(i.quantity) as integer) as units_sold,
    {{ money('sum(i.line_total)') }} as revenue
from {{ ref('stg_order_items') }} as i
join {{ ref('orders') }} as o using (order_id)
join {{ ref('stg_products') }} as p using (product_id)
where o.status <> 'returned'
group by all
