"""dbt-mxcp: a dbt project's endpoints, served over MCP.

dbt imports this module on every command (it is a top-level ``dbt_*`` module), so it must stay
cheap and must never raise: the dbt plugin is loaded only when dbt asks for ``plugins``.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # PEP 562: `plugins` is built on first access, which only dbt's plugin manager makes.
    if name == "plugins":
        if os.environ.get("DBT_MXCP_PLUGIN", "").strip().lower() in ("0", "off", "false", "no"):
            return []
        try:
            from .plugin import MxcpPlugin
        except Exception as exc:  # an incompatible dbt must not break every dbt command
            import sys

            sys.stderr.write(f"dbt-mxcp: the dbt plugin is off: it cannot load with this dbt ({exc})\n")
            return []
        return [MxcpPlugin]
    raise AttributeError(f"module 'dbt_mxcp' has no attribute {name!r}")
