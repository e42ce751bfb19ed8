"""Python endpoints (`language: python`): a function named like the endpoint, in `source.file`.

The function takes the arguments as keyword arguments and returns the result (rows, one row,
or a value); it may be sync or async. The module is loaded on first use and loaded again when
its file changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import CallError

_cache: dict[Path, tuple[int, Any]] = {}
_lock = threading.Lock()


def load_function(path: Path, name: str) -> Callable[..., Any]:
    """The function `name` in the Python file at `path` (reloaded when the file changes)."""
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise CallError("execution", f"python file {path} not found") from None
    with _lock:
        cached = _cache.get(path)
        if cached is None or cached[0] != stamp:
            module_name = "dbt_mxcp_endpoint_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise CallError("execution", f"cannot load python file {path}")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # the endpoint author's module failed to import
                raise CallError("execution", f"python file {path.name} failed to load: "
                                             f"{type(exc).__name__}: {exc}") from None
            sys.modules[module_name] = module
            cached = (stamp, module)
            _cache[path] = cached
    function = getattr(cached[1], name, None)
    if not callable(function):
        raise CallError("execution", f"python file {path.name} defines no function {name!r} "
                                     "(a Python endpoint's function is named like the endpoint)")
    return function  # type: ignore[no-any-return]


def invoke(function: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
    """Call the endpoint function (awaiting it when async); its errors become the call's error."""
    try:
        if inspect.iscoroutinefunction(function):
            return asyncio.run(function(**arguments))
        return function(**arguments)
    except CallError:
        raise
    except Exception as exc:  # the endpoint's own failure: report it, never a traceback
        raise CallError("execution", f"{type(exc).__name__}: {exc}") from None
