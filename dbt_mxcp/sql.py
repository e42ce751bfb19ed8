"""Endpoint SQL: rendering ``ref``/``source``/``this``/``var``/``env_var`` from the manifest, and ``$params``.

Parameters are never spliced into SQL text: they stay ``$name`` placeholders that DuckDB binds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from .manifest import Manifest, Node

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class SqlError(ValueError):
    """An endpoint's SQL cannot be rendered or is unsafe to run."""


def find_parameters(sql: str) -> list[str]:
    """The ``$name`` placeholders of `sql`, in order of first use, outside strings and comments."""
    names: list[str] = []
    for segment in code_segments(sql):
        if re.search(r"\$\d", segment):
            raise SqlError("positional parameters ($1) are not supported: use named ones such as $customer_id")
        for name in _PARAM.findall(segment):
            if name not in names:
                names.append(name)
    return names


def to_positional(sql: str, casts: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """`sql` with its ``$name`` placeholders as PostgreSQL's ``$1, $2, ...``, and the names in that order.

    A name in `casts` becomes ``($1::type)``.
    """
    names: list[str] = []
    parts: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        placeholder = f"${names.index(name) + 1}"
        return f"({placeholder}::{casts[name]})" if casts and name in casts else placeholder

    for start, end, is_code in _spans(sql):
        parts.append(_PARAM.sub(number, sql[start:end]) if is_code else sql[start:end])
    return "".join(parts), names


def _spans(sql: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_code) spans covering `sql`; strings, quoted identifiers and comments are not code.

    Follows DuckDB's lexer: '' and "" escape quotes, E'..' strings take backslash escapes, block
    comments nest, and $tag$..$tag$ quotes text.
    """
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        end = -1
        if c in ("'", '"'):
            escapes = c == "'" and i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum()
                                                                                  or sql[i - 2] == "_"))
            j = i + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if sql[j + 1:j + 2] == c:
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            end = j
        elif c == "$" and (m := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(m.group(0), m.end())
            end = n if close == -1 else close + len(m.group(0))
        if end != -1:
            if i > start:
                yield start, i, True
            yield i, end, False
            i = start = end
        else:
            i += 1
    if start < n:
        yield start, n, True


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def code_segments(sql: str) -> Iterator[str]:
    """The parts of `sql` that are code: quoted strings, quoted identifiers and comments left out."""
    for start, end, is_code in _spans(sql):
        if is_code:
            yield sql[start:end]


def single_statement(sql: str) -> str:
    """`sql` without trailing semicolons; SqlError when it holds more than one statement."""
    last_code = 0
    semicolons: list[int] = []
    for start, end, is_code in _spans(sql):
        if not is_code:
            last_code = max(last_code, end) if sql[start] in "'\"$" else last_code
            continue
        for offset, ch in enumerate(sql[start:end]):
            if ch == ";":
                semicolons.append(start + offset)
            elif not ch.isspace():
                last_code = start + offset + 1
    if any(pos < last_code for pos in semicolons):
        raise SqlError("the SQL holds more than one statement; an endpoint runs exactly one query")
    if not last_code:
        raise SqlError("the SQL is empty")
    cut = min(semicolons) if semicolons else len(sql)
    return sql[:cut].rstrip() if semicolons else sql


class RenderContext:
    """What endpoint SQL may use from the project: relations, vars, env vars and the target."""

    def __init__(self, manifest: Manifest, variables: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        self.manifest = manifest
        self.variables = variables
        self.target = dict(target)
        self._env: Any = None

    def render(self, text: str, host: Node | None, used: list[str]) -> str:
        """Render dbt Jinja in `text`; node ids of the relations it reads are appended to `used`."""
        import jinja2

        if self._env is None:
            from jinja2.sandbox import SandboxedEnvironment

            self._env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        env = self._env

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
            context["this"] = _This(host, used)
        try:
            simple = _render_simple(text, context)
            return simple if simple is not None else str(env.from_string(text).render(context))
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


_EXPRESSION = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_STRING = r"""(?:'[^'\\]*'|"[^"\\]*")"""
_SIMPLE_CALL = re.compile(rf"^(ref|source|var|env_var)\(\s*({_STRING})\s*(?:,\s*({_STRING})\s*)?\)$")
_SIMPLE_ATTRIBUTE = re.compile(r"^(this|target)(?:\.(\w+))?$")


def _render_simple(text: str, context: Mapping[str, Any]) -> str | None:
    """Render the common case without compiling a Jinja template: only ``{{ ref('x') }}``-like calls
    with string literals, ``{{ this }}`` and ``{{ target.x }}``. None when the text needs full Jinja."""
    if "{%" in text or "{#" in text or "{{-" in text or "-}}" in text:
        return None  # statements, comments and whitespace control are Jinja's job
    parts: list[str] = []
    pos = 0
    for m in _EXPRESSION.finditer(text):
        expression = m.group(1)
        call = _SIMPLE_CALL.match(expression)
        attribute = _SIMPLE_ATTRIBUTE.match(expression) if call is None else None
        if call is not None:
            args = [a[1:-1] for a in call.group(2, 3) if a is not None]
            value = context[call.group(1)](*args)
        elif attribute is not None and attribute.group(1) in context:
            value = context[attribute.group(1)]
            if attribute.group(2):
                value = getattr(value, attribute.group(2)) if not isinstance(value, Mapping) else \
                    value.get(attribute.group(2))
                if value is None:
                    return None  # let Jinja raise its own undefined error
        else:
            return None
        parts.append(text[pos:m.start()])
        parts.append(str(value))
        pos = m.end()
    return "".join(parts) + text[pos:]


class _This:
    """``{{ this }}``: the host node's relation, counted as read only where the SQL uses it."""

    def __init__(self, host: Node, used: list[str]) -> None:
        self._host = host
        self._used = used

    def _use(self) -> Node:
        self._used.append(self._host.unique_id)
        return self._host

    def __str__(self) -> str:
        return self._use().relation()

    @property
    def database(self) -> str:
        return str(self._use().data.get("database") or "")

    @property
    def schema(self) -> str:
        return str(self._use().data.get("schema") or "")

    @property
    def identifier(self) -> str:
        node = self._use()
        return str(node.data.get("alias") or node.data.get("identifier") or node.name)

    name = identifier


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
    """`sql` usable inside ``select * from (...)``: trailing semicolons dropped, a last -- comment closed."""
    return f"select * from (\n{single_statement(sql)}\n) as mxcp_q"


@lru_cache(maxsize=4096)
def capped(sql: str, rows: int) -> str:
    """`sql` returning at most `rows` rows: the database can then stop early, and keep only the top rows
    of a sort instead of sorting everything (what `max_rows` would drop is never computed)."""
    return f"{as_subquery(sql)} limit {int(rows)}"
