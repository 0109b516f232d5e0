"""The host's imports, or stand-ins when the SDK runs under plain CPython (unit tests).

componentize-py generates the `wit_world` package at build time; outside a component it does
not exist, so logs go to stderr and the run context is a first attempt with no flow.
"""

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

try:
    from wit_world.imports import host as _wit_host
    from wit_world.imports import types as _wit_types

    IN_COMPONENT = True
except ImportError:
    _wit_host = None
    _wit_types = None
    IN_COMPONENT = False

LEVELS = ("trace", "debug", "info", "warning", "error")


@dataclass
class RunContext:
    """Who is running the current task and why, as the host sees it."""

    flow_run_id: Optional[str]
    flow_run_name: Optional[str]
    task_run_id: str
    task_run_name: str
    task_name: str
    #: 1 for the first attempt, 2 for the first retry, and so on.
    attempt: int
    tags: list = field(default_factory=list)
    #: The flow run's parameters (an empty dict outside a flow).
    parameters: dict = field(default_factory=dict)


def log(level: str, message: str) -> None:
    """Sends one log line to the current task run; `level` is one of LEVELS."""
    if _wit_host is None:
        print(f"[{level}] {message}", file=sys.stderr)
        return
    _wit_host.log(_wit_types.LogLevel[level.upper()], message)


def context() -> RunContext:
    """The current run's context (a stand-in first attempt outside a component)."""
    if _wit_host is None:
        return RunContext(None, None, "native", "native", "native", 1, [], {})
    raw = _wit_host.context()
    parameters: Any = json.loads(raw.parameters) if raw.parameters else {}
    return RunContext(
        flow_run_id=raw.flow_run_id,
        flow_run_name=raw.flow_run_name,
        task_run_id=raw.task_run_id,
        task_run_name=raw.task_run_name,
        task_name=raw.task_name,
        attempt=raw.attempt,
        tags=list(raw.tags),
        parameters=parameters,
    )
