"""Helpers for tests that run real dbt and dbt-mxcp commands in copies of the repo's dbt projects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_IGNORE = shutil.ignore_patterns("target", "dbt_packages", "logs", "*.duckdb*", "package-lock.yml", "seeds/*.csv")


def env(**extra: str) -> dict[str, str]:
    """The environment for dbt and dbt-mxcp subprocesses."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("DBT_")}
    out.update({"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_MXCP_PACKAGE_PATH": str(REPO),
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"})
    out.update(extra)
    return out


def run(args: list[str], cwd: Path, *, check: bool = True, extra_env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command from the test virtualenv's bin folder; fail with its output when `check` and rc != 0."""
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    proc = subprocess.run([exe, *args[1:]], cwd=cwd, env=env(**(extra_env or {})), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@dataclass
class Project:
    """A built dbt project in a temp folder, with helpers to call dbt and dbt-mxcp in it."""

    path: Path

    def dbt(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["dbt", *args, "--profiles-dir", "."], self.path, check=check)

    def mxcp(self, *args: str, check: bool = True, extra_env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        return run(["dbt-mxcp", *args, "--profiles-dir", "."], self.path, check=check, extra_env=extra_env)

    def call(self, kind: str, name: str, *params: str, user: dict[str, Any] | None = None) -> Any:
        """`dbt-mxcp run` and its JSON result."""
        args = ["run", kind, name]
        for p in params:
            args += ["--param", p]
        if user is not None:
            args += ["--user", json.dumps(user)]
        return json.loads(self.mxcp(*args).stdout)

    def artifact(self, name: str = "mxcp_registry.json") -> dict[str, Any]:
        return dict(json.loads((self.path / "target" / name).read_text()))


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a dbt project without build output."""
    shutil.copytree(src, dest, ignore=_IGNORE)
    return dest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Wait until `url` answers 200; fail with the server's output if it exits or never answers."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    """SIGTERM the process we started (by PID), then SIGKILL if it does not exit; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return int(proc.returncode)
