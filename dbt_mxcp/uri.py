"""Resource URI templates (RFC 6570 level 1: simple ``{var}`` expansion) and matching."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_VAR = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class UriTemplate:
    """A URI template such as ``customers://{customer_id}``; a URI without variables is static."""

    def __init__(self, template: str) -> None:
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", template):
            raise ValueError(f"resource uri {template!r} needs a scheme, e.g. customers://{{customer_id}}")
        self.template = template
        self.variables: list[str] = []
        pattern = ""
        pos = 0
        for m in _VAR.finditer(template):
            name = m.group(1)
            if not _NAME.match(name):
                raise ValueError(f"uri variable {{{name}}} in {template!r} must be a plain name "
                                 "(a letter, then letters, digits, _); only simple {var} expansion is supported")
            if name in self.variables:
                raise ValueError(f"uri variable {{{name}}} appears twice in {template!r}")
            self.variables.append(name)
            pattern += re.escape(template[pos:m.start()]) + f"(?P<{name}>[^/?#]+)"
            pos = m.end()
        rest = _VAR.sub("", template)
        if "{" in rest or "}" in rest:
            raise ValueError(f"resource uri {template!r} has an unbalanced brace")
        self._regex = re.compile("^" + pattern + re.escape(template[pos:]) + "$")

    @property
    def is_static(self) -> bool:
        """A template without variables names exactly one resource."""
        return not self.variables

    def match(self, uri: str) -> dict[str, str] | None:
        """The variables of `uri` when it fits this template, else None."""
        m = self._regex.match(uri)
        return {k: unquote(v) for k, v in m.groupdict().items()} if m else None

    def expand(self, values: dict[str, object]) -> str:
        """The concrete URI for `values`."""
        return _VAR.sub(lambda m: quote(str(values[m.group(1)]), safe=""), self.template)
