-- Resource `orders://{order_id}/lines` (declared on the `orders` model in
-- models/marts/schema.yml): the lines of one order with product details.
select
    i.order_item_id,
    p.sku,
    p.product_name,
    i.quantity,
    i.unit_price,
    i.line_total
from {{ ref('stg_order_items') }} as i
join {{ ref('stg_products') }} as p using (product_id)
where i.order_id = $order_id
order by i.order_item_id
