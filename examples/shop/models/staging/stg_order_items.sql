select
    order_item_id,
    order_id,
    product_id,
    quantity,
    unit_price,
    {{ money('quantity * unit_price') }} as line_total
from {{ ref('raw_order_items') }}
