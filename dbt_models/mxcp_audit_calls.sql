{#- One row per audited call. Off by default: enable with `--vars '{dbt_mxcp_audit_enabled: true}'`
    (or in dbt_project.yml vars); the log is read through dbt_mxcp.audit_log(). -#}
{{ config(enabled=var('dbt_mxcp_audit_enabled', false), materialized='table') }}

select
    time as called_at,
    trace_id,
    transport,
    caller.id as caller_id,
    caller.email as caller_email,
    caller.role as caller_role,
    endpoint.kind as endpoint_kind,
    endpoint.name as endpoint_name,
    endpoint.node as endpoint_node,
    status,
    status = 'ok' as succeeded,
    "rows" as row_count,
    affected_rows,
    truncated,
    duration_ms,
    error,
    arguments,
    decisions,
    hash
from {{ dbt_mxcp.audit_log() }}
