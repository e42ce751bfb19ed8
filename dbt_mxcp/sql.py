"""Endpoint SQL: rendering ``ref``/``source``/``this``/``var``/``env_var`` from the manifest, and ``$params``.

Parameters are never spliced into SQL text: they stay ``$name`` placeholders that DuckDB binds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .manifest import Manifest, Node

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class SqlError(ValueError):
    """An endpoint's SQL cannot be rendered or is unsafe to run."""


def find_parameters(sql: str) -> list[str]:
    """The ``$name`` placeholders of `sql`, in order of first use, outside strings and comments."""
    names: list[str] = []
    for segment in _code_segments(sql):
        if re.search(r"\$\d", segment):
            raise SqlError("positional parameters ($1) are not supported: use named ones such as $customer_id")
        for name in _PARAM.findall(segment):
            if name not in names:
                names.append(name)
    return names


def _code_segments(sql: str) -> Iterable[str]:
    """The parts of `sql` that are code: quoted strings, quoted identifiers and comments left out."""
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        two = sql[i:i + 2]
        end = -1
        if c in ("'", '"'):
            end = i + 1
            while True:
                end = sql.find(c, end)
                if end == -1 or sql[end + 1:end + 2] != c:
                    break
                end += 2  # a doubled quote is an escaped quote
            end = n if end == -1 else end + 1
        elif two == "--":
            end = sql.find("\n", i)
            end = n if end == -1 else end
        elif two == "/*":
            end = sql.find("*/", i + 2)
            end = n if end == -1 else end + 2
        elif c == "$" and (m := re.match(r"\$([A-Za-z_]\w*)?\$", sql[i:])) and not _PARAM.fullmatch(m.group(0)):
            tag = m.group(0)
            close = sql.find(tag, i + len(tag))
            end = n if close == -1 else close + len(tag)
        if end != -1:
            yield sql[start:i]
            i = start = end
        else:
            i += 1
    yield sql[start:]


class RenderContext:
    """What endpoint SQL may use from the project: relations, vars, env vars and the target."""

    def __init__(self, manifest: Manifest, variables: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        self.manifest = manifest
        self.variables = variables
        self.target = dict(target)

    def render(self, text: str, host: Node | None, used: list[str]) -> str:
        """Render dbt Jinja in `text`; node ids of the relations it reads are appended to `used`."""
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)

        def ref(*args: str, **kwargs: Any) -> str:
            node = self.manifest.resolve_ref(*args, version=kwargs.get("version", kwargs.get("v")))
            used.append(node.unique_id)
            return node.relation()

        def source(source_name: str, table_name: str) -> str:
            node = self.manifest.resolve_source(source_name, table_name)
            used.append(node.unique_id)
            return node.relation()

        context: dict[str, Callable[..., Any] | Any] = {
            "ref": ref,
            "source": source,
            "var": self._var,
            "env_var": _env_var,
            "target": self.target,
        }
        if host is not None and host.relation_name:
            context["this"] = host.relation_name
            used.append(host.unique_id)
        try:
            return env.from_string(text).render(context)
        except jinja2.UndefinedError as exc:
            if "'this'" in str(exc):
                raise SqlError("{{ this }} names the host node's relation; this node has none") from None
            raise SqlError(f"undefined name in Jinja: {exc}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise SqlError(f"Jinja syntax error on line {exc.lineno}: {exc.message}") from None
        except SqlError:
            raise
        except Exception as exc:  # a user's template may raise anything; report it, never a traceback
            raise SqlError(f"cannot render SQL: {exc}") from None

    def _var(self, name: str, default: Any = ...) -> Any:
        if name in self.variables:
            return self.variables[name]
        if default is ...:
            raise SqlError(f"var('{name}') is not defined: set it under vars: in dbt_project.yml or with --vars")
        return default


def _env_var(name: str, default: Any = ...) -> Any:
    if name.startswith("DBT_ENV_SECRET"):
        raise SqlError(f"env_var('{name}'): secrets (DBT_ENV_SECRET_*) cannot be used in endpoint SQL")
    if name in os.environ:
        return os.environ[name]
    if default is ...:
        raise SqlError(f"env_var('{name}') is not set and has no default")
    return default


def quote_identifier(name: str) -> str:
    """A DuckDB identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def model_backed_sql(relation: str, filters: list[str]) -> str:
    """SQL reading a whole relation, filtered by equality on the named columns."""
    where = " and ".join(f"{quote_identifier(c)} = ${c}" for c in filters)
    return f"select * from {relation}" + (f" where {where}" if where else "")


def table_function_sql(relation: str, parameters: list[str]) -> str:
    """SQL calling a dbt-duckdb table_function model with its parameters in declared order."""
    return f"select * from {relation}({', '.join('$' + p for p in parameters)})"


def as_subquery(sql: str) -> str:
    """`sql` usable inside ``select * from (...)``: trailing semicolons dropped, comments closed."""
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    return f"select * from (\n{body}\n) as mxcp_q"
