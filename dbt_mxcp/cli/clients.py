"""`serve --print-config`: the configuration block an MCP client needs to start or reach this server."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..project import Flags, find_profiles_dir, load_project


def client_config(flags: Flags, kind: str, *, host: str, port: int) -> str:
    """JSON for Claude Desktop's `mcpServers` (stdio), or for a client that connects over HTTP."""
    project = load_project(flags)
    name = project.name or "dbt-mxcp"
    if kind == "http":
        shown = f"[{host}]" if ":" in host else host
        return json.dumps({"mcpServers": {name: {"type": "http", "url": f"http://{shown}:{port}/mcp"}}}, indent=2)
    command = shutil.which("dbt-mxcp") or str(Path(sys.executable).with_name("dbt-mxcp"))
    args = ["serve", "--project-dir", str(project.project_dir), "--profiles-dir", str(find_profiles_dir(flags))]
    if flags.target:
        args += ["--target", flags.target]
    return json.dumps({"mcpServers": {name: {"command": command, "args": args}}}, indent=2)
