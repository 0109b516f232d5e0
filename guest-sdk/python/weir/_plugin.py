"""The component's `weir:task/task` export, built by `weir build` with componentize-py.

The entry module `weir build` generates imports the user's task modules (which register their
tasks) and then this module's `Task`, the class componentize-py exports.
"""

import json
import sys
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

from . import _host
from ._task import Fatal, registered_tasks


def _lookup(name: str):
    for task in registered_tasks():
        if task.name == name:
            return task
    names = ", ".join(f"`{t.name}`" for t in registered_tasks()) or "none"
    raise Err(types.TaskError_Fatal(f"no task `{name}` in this plugin; it has {names}"))


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class Task(exports.Task):
    def info(self) -> list:
        return [
            types.TaskInfo(
                name=t.name,
                description=t.description,
                version=t.version,
                tags=t.tags,
                retries=t.retries,
                retry_delays_ms=t.retry_delays_ms,
                retry_backoff=None if t.retry_backoff is None else types.ExponentialBackoff(*t.retry_backoff),
                retry_jitter_factor=t.retry_jitter_factor,
                timeout_ms=t.timeout_ms,
                cache_policy={
                    "none": types.CachePolicy.NONE,
                    "inputs": types.CachePolicy.INPUTS,
                    "custom-key": types.CachePolicy.CUSTOM_KEY,
                }[t.cache_policy],
                cache_expiration_ms=t.cache_expiration_ms,
                log_prints=t.log_prints,
                run_name=t.run_name,
                input_schema=json.dumps(t.input_schema),
                output_schema=None if t.output_schema is None else json.dumps(t.output_schema),
                needs=t.needs,
            )
            for t in registered_tasks()
        ]

    def run(self, task: str, input: str) -> str:
        marked = _lookup(task)
        try:
            return marked.run_json(input)
        except Fatal as error:
            raise Err(types.TaskError_Fatal(str(error))) from None
        except BaseException as error:  # noqa: BLE001 - every failure is reported to the host
            _host.log("error", "".join(traceback.format_exception(error)).rstrip())
            raise Err(types.TaskError_Retriable(f"{type(error).__name__}: {error}")) from None
        finally:
            _flush()

    def cache_key(self, task: str, input: str):
        try:
            return _lookup(task).cache_key_json(input)
        except Err:
            return None
        except Exception as error:  # a broken key function means: do not cache
            _host.log("warning", f"cache_key_fn failed, the result is not cached: {type(error).__name__}: {error}")
            return None
