"""Finding the dbt project, its target path and vars, and the warehouse in the dbt profile, as dbt does."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

PROJECT_FILE = "dbt_project.yml"
PROFILES_FILE = "profiles.yml"


@dataclass(frozen=True)
class Flags:
    """dbt's own flags (the CLI fills them from options and DBT_* env vars)."""

    project_dir: str | None = None
    profiles_dir: str | None = None
    profile: str | None = None
    target: str | None = None
    target_path: str | None = None
    vars: str | None = None


@dataclass(frozen=True)
class Project:
    """A dbt project as dbt-mxcp sees it."""

    project_dir: Path
    name: str
    profile_name: str | None
    target_path: Path
    log_path: Path
    variables: Mapping[str, Any]
    flags: Flags = field(default_factory=Flags)


@dataclass(frozen=True)
class DuckDbConfig:
    """The DuckDB warehouse of a dbt-duckdb profile target."""

    profile: str
    target: str
    path: str
    database: str
    schema: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    attach: tuple[Mapping[str, Any], ...] = ()

    def render_target(self) -> dict[str, Any]:
        """What `{{ target }}` shows endpoint SQL."""
        return {"name": self.target, "profile_name": self.profile, "type": "duckdb", "database": self.database,
                "schema": self.schema, "path": self.path}


@dataclass(frozen=True)
class PostgresConfig:
    """The PostgreSQL warehouse of a dbt-postgres profile target (the password never in repr)."""

    profile: str
    target: str
    host: str
    port: int
    user: str
    database: str
    schema: str
    password: str = field(default="", repr=False)
    sslmode: str | None = None
    connect_timeout: int = 10
    role: str | None = None
    search_path: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)  # sslcert, sslkey, sslrootcert, keepalives_idle

    def render_target(self) -> dict[str, Any]:
        """What `{{ target }}` shows endpoint SQL: no password."""
        return {"name": self.target, "profile_name": self.profile, "type": "postgres", "database": self.database,
                "schema": self.schema, "host": self.host, "port": self.port, "user": self.user}


WarehouseConfig = DuckDbConfig | PostgresConfig

def read_yaml(path: Path) -> Any:
    import yaml

    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def find_project_dir(project_dir: str | None) -> Path:
    """The project directory: the flag/env var, else the nearest dbt_project.yml from cwd upwards."""
    if project_dir:
        path = Path(project_dir).expanduser().resolve()
        if not (path / PROJECT_FILE).is_file():
            raise ConfigError(f"no {PROJECT_FILE} in {path} (from --project-dir / DBT_PROJECT_DIR)")
        return path
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    raise ConfigError(f"no {PROJECT_FILE} in {here} or any parent folder: run dbt-mxcp inside a dbt project "
                      "or pass --project-dir")


def parse_vars(text: str | None) -> dict[str, Any]:
    """The --vars value: a YAML or JSON mapping, as dbt takes it."""
    if not text:
        return {}
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"--vars must be a YAML or JSON mapping such as '{{key: value}}', got {text!r}")
    return value


def render_jinja(value: Any, variables: Mapping[str, Any]) -> Any:
    """Render dbt Jinja (env_var, var) in every string of a YAML value, as dbt renders its yml files."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
        # dbt's type filters: `_native` below turns the rendered text into a number or boolean as dbt does.
        env.filters.update(dict.fromkeys(("as_number", "as_bool", "as_native", "as_text"), lambda v: v))

        def env_var(name: str, default: Any = ...) -> Any:
            if name in os.environ:
                return os.environ[name]
            if default is ...:
                raise ConfigError(f"env var {name} is not set and has no default (used in {value!r})")
            return default

        def var(name: str, default: Any = ...) -> Any:
            if name in variables:
                return variables[name]
            if default is ...:
                raise ConfigError(f"var('{name}') is not defined")
            return default

        try:
            rendered = env.from_string(value).render(env_var=env_var, var=var)
        except ConfigError:
            raise
        except jinja2.TemplateError as exc:
            raise ConfigError(f"cannot render {value!r}: {exc}") from None
        return _native(rendered)
    if isinstance(value, dict):
        return {k: render_jinja(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_jinja(v, variables) for v in value]
    return value


def _native(text: str) -> Any:
    # dbt turns rendered numbers and booleans back into YAML scalars (e.g. threads: "{{ env_var('T') }}").
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool) else text


def load_project(flags: Flags) -> Project:
    """Read dbt_project.yml under the flags' rules (target-path: flag, DBT_TARGET_PATH, file, 'target')."""
    project_dir = find_project_dir(flags.project_dir)
    raw = read_yaml(project_dir / PROJECT_FILE)
    if not isinstance(raw, dict):
        raise ConfigError(f"{project_dir / PROJECT_FILE} is not a mapping")
    cli_vars = parse_vars(flags.vars)
    project_vars = raw.get("vars") or {}
    name = str(raw.get("name") or "")
    variables: dict[str, Any] = {k: v for k, v in project_vars.items() if not isinstance(v, dict) or k != name}
    scoped = project_vars.get(name)
    if isinstance(scoped, dict):
        variables.update(scoped)
    variables.update(cli_vars)
    rendered = render_jinja({k: raw.get(k) for k in ("profile", "target-path", "log-path")}, variables)
    target_path = flags.target_path or rendered.get("target-path") or "target"
    log_path = rendered.get("log-path") or "logs"
    return Project(
        project_dir=project_dir,
        name=name,
        profile_name=flags.profile or rendered.get("profile"),
        target_path=(project_dir / target_path).resolve(),
        log_path=(project_dir / log_path).resolve(),
        variables=variables,
        flags=flags,
    )


def find_profiles_dir(flags: Flags) -> Path:
    """--profiles-dir / DBT_PROFILES_DIR, else cwd when it has profiles.yml, else ~/.dbt (dbt's order)."""
    if flags.profiles_dir:
        return Path(flags.profiles_dir).expanduser().resolve()
    if (Path.cwd() / PROFILES_FILE).is_file():
        return Path.cwd().resolve()
    return Path.home() / ".dbt"


def load_warehouse_config(project: Project, recorded: Mapping[str, Any] | None = None) -> WarehouseConfig:
    """The warehouse of the profile target; a relative DuckDB path resolves as dbt resolved it.

    dbt-duckdb opens a relative `path` against dbt's working directory. When the registry artifact
    (`recorded`) says where dbt found it for the same profile and target, that path wins.
    """
    profiles_dir = find_profiles_dir(project.flags)
    path = profiles_dir / PROFILES_FILE
    if not path.is_file():
        raise ConfigError(f"no {PROFILES_FILE} in {profiles_dir}: pass --profiles-dir or set DBT_PROFILES_DIR")
    profiles = read_yaml(path) or {}
    name = project.profile_name
    if not name:
        raise ConfigError(f"{project.project_dir / PROJECT_FILE} names no profile: add `profile:` or pass --profile")
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        raise ConfigError(f"profile {name!r} not found in {path}")
    target = project.flags.target or render_jinja(profile.get("target"), project.variables) or "dev"
    outputs = profile.get("outputs") or {}
    if target not in outputs:
        raise ConfigError(f"target {target!r} not found in profile {name!r} of {path} "
                          f"(targets: {', '.join(sorted(outputs)) or 'none'})")
    creds = render_jinja(outputs[target], project.variables)
    if creds.get("type") == "postgres":
        return _postgres_config(name, target, creds, path)
    if creds.get("type") != "duckdb":
        raise ConfigError(f"target {target!r} of profile {name!r} is of type {creds.get('type')!r}; dbt-mxcp serves "
                          "dbt-duckdb and dbt-postgres targets")
    db_path = str(creds.get("path") or ":memory:")
    if recorded and recorded.get("profile") == name and recorded.get("target") == target \
            and recorded.get("configured_path") == db_path and recorded.get("path"):
        db_path = str(recorded["path"])
    elif db_path != ":memory:" and not db_path.startswith(("md:", "motherduck:")):
        db_path = str(Path(db_path).expanduser().resolve())
    database = str(creds.get("database") or (Path(db_path).stem if db_path != ":memory:" else "memory"))
    return DuckDbConfig(
        profile=name, target=target, path=db_path, database=database, schema=str(creds.get("schema") or "main"),
        settings=dict(creds.get("settings") or {}), attach=tuple(creds.get("attach") or ()),
    )


_PG_PASSTHROUGH = ("sslcert", "sslkey", "sslrootcert", "keepalives_idle")


def _postgres_config(profile: str, target: str, creds: Mapping[str, Any], path: Path) -> PostgresConfig:
    """A dbt-postgres target, with dbt-postgres's field names and defaults."""
    missing = [k for k in ("host", "user", "schema") if not creds.get(k)]
    if not (creds.get("dbname") or creds.get("database")):
        missing.append("dbname")
    if missing:
        raise ConfigError(f"target {target!r} of profile {profile!r} in {path} lacks {', '.join(missing)}")
    try:
        port = int(creds.get("port") or 5432)
        connect_timeout = int(creds.get("connect_timeout") or 10)
    except (TypeError, ValueError):
        raise ConfigError(f"target {target!r} of profile {profile!r}: port and connect_timeout must be "
                          "whole numbers") from None
    return PostgresConfig(
        profile=profile, target=target, host=str(creds["host"]), port=port, user=str(creds["user"]),
        database=str(creds.get("dbname") or creds.get("database")), schema=str(creds["schema"]),
        password=str(creds.get("password") or creds.get("pass") or ""),
        sslmode=str(creds["sslmode"]) if creds.get("sslmode") else None, connect_timeout=connect_timeout,
        role=str(creds["role"]) if creds.get("role") else None,
        search_path=str(creds["search_path"]) if creds.get("search_path") else None,
        options={k: str(creds[k]) for k in _PG_PASSTHROUGH if creds.get(k) is not None})
