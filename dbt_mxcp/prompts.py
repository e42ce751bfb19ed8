"""Prompt messages: Jinja templates over the prompt's parameters, rendered in a sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from .endpoints import PromptSpec


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def template_variables(text: str) -> set[str]:
    """The names a message template reads; ValueError on a syntax error."""
    import jinja2
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(_environment().parse(text)))
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"Jinja syntax error on line {exc.lineno}: {exc.message}") from None
    except RecursionError:  # Jinja's parser recurses per bracket: some 30 nested ones exhaust the stack
        raise ValueError("the template nests brackets too deeply") from None


def render_messages(spec: PromptSpec, arguments: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompt's messages with the arguments filled in: ``[{role, content}]``."""
    env = _environment()
    return [{"role": m.role, "content": env.from_string(m.prompt).render(dict(arguments))} for m in spec.messages]
