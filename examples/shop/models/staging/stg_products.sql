select
    product_id,
    sku,
    name as product_name,
    category,
    price
from {{ ref('raw_products') }}
