{#-
  The dbt-mxcp audit log (hash-chained records; docs/audit.md) as a relation, one column per
  record field:

      select status, count(*) from {{ dbt_mxcp.audit_log() }} as calls group by status

  The var `dbt_mxcp_audit_sink` says where the server writes it, as `audit.sink` in mxcp.yml:

  - `jsonl` (default, dbt-duckdb): `path` (else the var `dbt_mxcp_audit_path`, else
    `logs/mxcp_audit.jsonl`, relative to where dbt runs) and its rotated files (`.1`, `.2`, ...).
    A line torn by a crash is skipped.
  - `duckdb` (dbt-duckdb): the table `dbt_mxcp_audit_table` (default `mxcp_audit`) of the DuckDB
    file `path` (else `dbt_mxcp_audit_path`, else `logs/mxcp_audit.duckdb`), attached read-only.
    DuckDB refuses this while a server writes the file: read a copy (docs/audit.md).
  - `postgres` (dbt-postgres): the package's source `dbt_mxcp.mxcp_audit` (sources.yml).

  On dbt-duckdb `caller` and `endpoint` are structs and `arguments`, `decisions` JSON; on
  dbt-postgres all four are jsonb. `time` is a UTC timestamp without time zone on both.
-#}
{% macro audit_log(path=none, sink=none) -%}
  {%- set sink = sink or var('dbt_mxcp_audit_sink', 'jsonl') -%}
  {%- if sink not in ('jsonl', 'duckdb', 'postgres') -%}
    {{ exceptions.raise_compiler_error("dbt_mxcp_audit_sink must be jsonl, duckdb or postgres, not '" ~ sink ~ "'") }}
  {%- endif -%}
  {{ return(adapter.dispatch('audit_log', 'dbt_mxcp')(path, sink)) }}
{%- endmacro %}

{#- The record's fields and their DuckDB types, shared by the JSONL and DuckDB readers. -#}
{% macro audit_duckdb_types() -%}
  {{ return({
    'time': 'TIMESTAMP', 'trace_id': 'VARCHAR', 'transport': 'VARCHAR',
    'caller': 'STRUCT(id VARCHAR, email VARCHAR, name VARCHAR, role VARCHAR, groups VARCHAR[])',
    'endpoint': 'STRUCT(kind VARCHAR, name VARCHAR, node VARCHAR)',
    'arguments': 'JSON', 'decisions': 'JSON', 'status': 'VARCHAR', 'rows': 'BIGINT', 'affected_rows': 'BIGINT',
    'truncated': 'BOOLEAN', 'duration_ms': 'DOUBLE', 'error': 'VARCHAR', 'prev_hash': 'VARCHAR', 'hash': 'VARCHAR'
  }) }}
{%- endmacro %}

{% macro duckdb__audit_log(path, sink) -%}
  {%- set types = dbt_mxcp.audit_duckdb_types() -%}
  {%- if sink == 'jsonl' -%}
    {%- set path = path or var('dbt_mxcp_audit_path', 'logs/mxcp_audit.jsonl') -%}
    read_json('{{ path | replace("'", "''") }}*', format = 'newline_delimited', union_by_name = true, ignore_errors = true,
              columns = { {%- for name, type in types.items() %}{{ name }}: '{{ type }}'{{ ', ' if not loop.last }}{% endfor -%} })
  {%- elif sink == 'duckdb' -%}
    {%- set path = path or var('dbt_mxcp_audit_path', 'logs/mxcp_audit.duckdb') -%}
    {#- One alias per file, so two paths in one run never share an attachment. -#}
    {%- set alias = 'dbt_mxcp_audit_' ~ local_md5(path)[:12] -%}
    {%- if execute -%}
      {%- do run_query("attach if not exists '" ~ (path | replace("'", "''")) ~ "' as " ~ alias ~ " (read_only)") -%}
    {%- endif -%}
    (select unnest(from_json(line, '{{ tojson(types) }}'))
     from {{ alias }}.{{ var('dbt_mxcp_audit_table', 'mxcp_audit') }})
  {%- elif execute -%}  {#- not at parse time: the model is parsed even when disabled -#}
    {{ exceptions.raise_compiler_error("dbt-duckdb reads the jsonl and duckdb audit sinks; the postgres sink "
                                       "is read by a dbt-postgres project (docs/audit.md)") }}
  {%- endif -%}
{%- endmacro %}

{% macro postgres__audit_log(path, sink) -%}
  {%- if sink != 'postgres' -%}
    {%- if execute -%}  {#- not at parse time: the model is parsed even when disabled -#}
      {{ exceptions.raise_compiler_error("dbt-postgres reads the postgres audit sink only: set the var "
                                         "dbt_mxcp_audit_sink to postgres (docs/audit.md)") }}
    {%- endif -%}
    {{ return('') }}
  {%- endif -%}
  (select
      ((r ->> 'time')::timestamptz at time zone 'UTC') as "time",
      r ->> 'trace_id' as trace_id,
      r ->> 'transport' as transport,
      r -> 'caller' as caller,
      r -> 'endpoint' as endpoint,
      r -> 'arguments' as arguments,
      r -> 'decisions' as decisions,
      r ->> 'status' as status,
      (r ->> 'rows')::bigint as "rows",
      (r ->> 'affected_rows')::bigint as affected_rows,
      (r ->> 'truncated')::boolean as truncated,
      (r ->> 'duration_ms')::double precision as duration_ms,
      r ->> 'error' as error,
      r ->> 'prev_hash' as prev_hash,
      r ->> 'hash' as hash
   from (select line::jsonb as r from {{ source('dbt_mxcp', 'mxcp_audit') }}) as lines)
{%- endmacro %}

{% macro default__audit_log(path, sink) -%}
  {%- if execute -%}{{ exceptions.raise_compiler_error("dbt_mxcp.audit_log() supports dbt-duckdb and dbt-postgres, not " ~ target.type) }}{%- endif -%}
{%- endmacro %}

{#- A text field of a struct (dbt-duckdb) or jsonb object (dbt-postgres) column of audit_log(). -#}
{% macro audit_field(column, key) -%}
  {{ return(adapter.dispatch('audit_field', 'dbt_mxcp')(column, key)) }}
{%- endmacro %}

{% macro default__audit_field(column, key) -%}
  {{ column }}.{{ key }}
{%- endmacro %}

{% macro postgres__audit_field(column, key) -%}
  {{ column }} ->> '{{ key }}'
{%- endmacro %}
