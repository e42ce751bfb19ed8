select id, customer_id, ordered_at, amount, status
from {{ ref('orders') }}
where ordered_at >= cast($start as date)
  and ordered_at < cast($stop as date)
  and ($status is null or status = $status)
order by ordered_at, id
limit $max_orders
