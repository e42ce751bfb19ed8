{#-
    A dbt-duckdb table_function: dbt creates a DuckDB table macro
        create or replace function "shop"."main"."customer_orders"(p_customer_id) as table (<this select>)
    The parameter is referenced by its bare name below (no Jinja, no `$`).
    Query it with parentheses: select * from "shop"."main"."customer_orders"(1)
-#}
{{ config(materialized='table_function', parameters=['p_customer_id']) }}

select
    order_id,
    order_date,
    status,
    item_count,
    order_total
from {{ ref('orders') }}
where customer_id = p_customer_id
order by order_date desc, order_id desc
