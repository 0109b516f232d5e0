"""Write weir workflow tasks in Python.

A weir task plugin is a WebAssembly component (world `weir:task/plugin`) holding one or more
tasks. With this package a task is a plain Python function, decorated as in Prefect::

    from datetime import timedelta
    from weir import task, get_run_logger, Fatal

    @task(retries=3, retry_delay_seconds=[1, 5, 10], timeout_seconds=30, tags=["math"])
    def add(a: int, b: int) -> int:
        get_run_logger().info("adding %d and %d", a, b)
        return a + b

Its parameters are read from the run's JSON input and checked against their type hints; its
return value becomes the JSON output. `weir build` turns the module into a component with
componentize-py. Outside a component (in unit tests) the decorated function is still the plain
function, logs go to stderr and `get_run_context()` returns a stand-in first attempt.
"""

from ._host import RunContext, context as get_run_context
from ._task import (
    INPUTS,
    NONE,
    ExponentialBackoff,
    Fatal,
    Task,
    exponential_backoff,
    get_run_logger,
    registered_tasks,
    task,
)

__all__ = [
    "INPUTS",
    "NONE",
    "ExponentialBackoff",
    "Fatal",
    "RunContext",
    "Task",
    "exponential_backoff",
    "get_run_context",
    "get_run_logger",
    "registered_tasks",
    "task",
]
