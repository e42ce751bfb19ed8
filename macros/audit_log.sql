{#-
  The dbt-mxcp audit log (JSONL, hash-chained; docs/audit.md) as a relation dbt-duckdb can select from:

      select * from {{ dbt_mxcp.audit_log() }}

  `path` defaults to the var `dbt_mxcp_audit_path`, else `logs/mxcp_audit.jsonl` (dbt's default
  log-path, relative to where dbt runs); rotated files (`.1`, `.2`, ...) are read too. A line torn
  by a crash is skipped.
-#}
{% macro audit_log(path=none) %}
  {%- set path = path or var('dbt_mxcp_audit_path', 'logs/mxcp_audit.jsonl') -%}
  read_json('{{ path }}*', format = 'newline_delimited', union_by_name = true, ignore_errors = true,
            columns = {
              time: 'TIMESTAMP', trace_id: 'VARCHAR', transport: 'VARCHAR',
              caller: 'STRUCT(id VARCHAR, email VARCHAR, name VARCHAR, role VARCHAR, groups VARCHAR[])',
              endpoint: 'STRUCT(kind VARCHAR, name VARCHAR, node VARCHAR)',
              arguments: 'JSON', decisions: 'JSON', status: 'VARCHAR', rows: 'BIGINT', affected_rows: 'BIGINT',
              truncated: 'BOOLEAN', duration_ms: 'DOUBLE', error: 'VARCHAR', prev_hash: 'VARCHAR', hash: 'VARCHAR'
            })
{%- endmacro %}
