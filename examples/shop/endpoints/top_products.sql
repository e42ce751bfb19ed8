-- Tool `top_products` (declared on the `shop_mcp_server` exposure in models/exposures.yml).
-- Best-selling products between two dates, by revenue; returned orders are excluded
-- upstream in product_sales. $from_date and $to_date are ISO dates (YYYY-MM-DD).
select
    sku,
    product_name,
    category,
    cast(sum(units_sold) as integer) as units_sold,
    cast(sum(revenue) as decimal(12, 2)) as revenue
from {{ ref('product_sales') }}
where sales_month between date_trunc('month', cast($from_date as date))
                      and cast($to_date as date)
group by sku, product_name, category
order by revenue desc, sku
limit $limit
