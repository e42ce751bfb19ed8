{#- One row per audited call, on dbt-duckdb (jsonl or duckdb sink) and dbt-postgres (postgres sink).
    Off by default: enable with `--vars '{dbt_mxcp_audit_enabled: true}'` (or in dbt_project.yml
    vars); the log is read through dbt_mxcp.audit_log() (docs/audit.md). -#}
{{ config(enabled=var('dbt_mxcp_audit_enabled', false), materialized='table') }}

select
    "time" as called_at,
    trace_id,
    transport,
    {{ dbt_mxcp.audit_field('caller', 'id') }} as caller_id,
    {{ dbt_mxcp.audit_field('caller', 'email') }} as caller_email,
    {{ dbt_mxcp.audit_field('caller', 'role') }} as caller_role,
    {{ dbt_mxcp.audit_field('endpoint', 'kind') }} as endpoint_kind,
    {{ dbt_mxcp.audit_field('endpoint', 'name') }} as endpoint_name,
    {{ dbt_mxcp.audit_field('endpoint', 'node') }} as endpoint_node,
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
from {{ dbt_mxcp.audit_log() }} as records
