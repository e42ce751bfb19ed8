{#-
  dbt run-operation dbt_mxcp.list_endpoints
  Prints every MCP endpoint declared under config.meta.mxcp in the project, from dbt's own
  graph, so the declarations can be checked from dbt alone (no Python plugin needed).
-#}
{% macro list_endpoints() %}
  {% if execute %}
    {% set hosts = [] %}
    {% for node in graph.nodes.values() %}{% do hosts.append(node) %}{% endfor %}
    {% for node in graph.sources.values() %}{% do hosts.append(node) %}{% endfor %}
    {% for node in graph.exposures.values() %}{% do hosts.append(node) %}{% endfor %}
    {% set count = namespace(n=0) %}
    {% for node in hosts %}
      {% set block = (node.config.meta or {}).get('mxcp') or {} %}
      {% for kind, key in [('tool', 'name'), ('resource', 'uri'), ('prompt', 'name')] %}
        {% for endpoint in block.get(kind ~ 's') or [] %}
          {% set count.n = count.n + 1 %}
          {% set state = '' if endpoint.get('enabled', true) else ' (disabled)' %}
          {{ log(kind ~ ' ' ~ endpoint.get(key) ~ state ~ ' on ' ~ node.unique_id, info=true) }}
        {% endfor %}
      {% endfor %}
    {% endfor %}
    {{ log(count.n ~ ' endpoint(s) declared', info=true) }}
  {% endif %}
{% endmacro %}
