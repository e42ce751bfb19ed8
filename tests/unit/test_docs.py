"""Every user-facing field, option and environment variable is documented (a test fails otherwise)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

from dbt_mxcp import endpoints, types
from dbt_mxcp.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"

MODELS: list[type[BaseModel]] = [
    endpoints.ToolSpec, endpoints.ResourceSpec, endpoints.PromptSpec, endpoints.PromptMessage, endpoints.Parameter,
    endpoints.Source, endpoints.Policies, endpoints.PolicyRule, endpoints.Annotations, endpoints.EndpointTest,
    types.TypeDef,
]


def _yml_names(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        choices = getattr(field.validation_alias, "choices", None) or []
        names.update(c for c in choices if isinstance(c, str))
    return names


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_endpoint_field_is_documented(model: type[BaseModel]) -> None:
    text = (DOCS / "endpoints.md").read_text()
    missing = sorted(n for n in _yml_names(model) if f"`{n}`" not in text)
    assert not missing, f"docs/endpoints.md does not mention {missing} of {model.__name__}"


def _options(command: click.Command) -> set[str]:
    out = set()
    for param in command.params:
        if isinstance(param, click.Option):
            out.update(o for o in param.opts if o.startswith("--"))
    return out


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    """Every command, a group's subcommands included, with its full name."""
    out: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        out.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            out += _commands(command, f"{prefix} {name}")
    return out


def test_every_cli_command_and_option_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    assert isinstance(main, click.Group)
    commands = _commands(main, "dbt-mxcp")
    assert "dbt-mxcp drift check" in dict(commands)  # subcommands are walked too
    for name, command in commands:
        assert name in text, f"docs/cli.md does not describe `{name}`"
        missing = sorted(o for o in _options(command) - {"--help"} if f"`{o}" not in text)
        assert not missing, f"docs/cli.md does not document {missing} of `{name}`"


def test_every_environment_variable_is_documented() -> None:
    source = Path(endpoints.__file__).parent
    used = set()
    for path in source.rglob("*.py"):
        used |= set(re.findall(r"""(?:envvar=|environ\.get\(|getenv\()["'](DBT_[A-Z_]+)["']""", path.read_text()))
    assert used, "expected to find the env vars dbt-mxcp reads"
    docs = "".join(p.read_text() for p in DOCS.glob("*.md"))
    missing = sorted(v for v in used if v not in docs)
    assert not missing, f"undocumented environment variables: {missing}"


def test_every_setting_is_documented() -> None:
    from dbt_mxcp import settings

    text = (DOCS / "settings.md").read_text()
    missing = []
    for section, field in settings.Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):  # a mapping, such as policy_sets
            missing += [section] if f"`{section}" not in text else []
            continue
        missing += [f"{section}.{name}" for name in model.model_fields if f"`{section}.{name}`" not in text]
    assert not missing, f"docs/settings.md does not document {missing}"
