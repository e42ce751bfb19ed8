{#- Money amounts in the marts: exact decimals with two places. -#}
{% macro money(expr) -%}
    cast({{ expr }} as decimal(12, 2))
{%- endmacro %}
