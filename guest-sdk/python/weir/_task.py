"""The `@task` decorator and the registry of a plugin's tasks."""

import datetime
import functools
import inspect
import json
import logging
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from . import _host
from ._types import InputError, convert, object_schema, schema, to_json_value, unknown_message

#: Reuse results for the same input (Prefect's `cache_policy=INPUTS`).
INPUTS = "inputs"
#: Never reuse results (the default).
NONE = "none"


class Fatal(Exception):
    """Raise to fail the run at once: retrying cannot help (bad input, a broken invariant).

    Any other exception fails the attempt and lets the host retry while retries remain.
    """


@dataclass(frozen=True)
class ExponentialBackoff:
    """Retry delays of base, 2 x base, 4 x base... seconds, capped at `max_seconds`."""

    base_seconds: float
    max_seconds: Optional[float] = None


def exponential_backoff(base_seconds: float, max_seconds: Optional[float] = None) -> ExponentialBackoff:
    """For `retry_delay_seconds`: exponential delays instead of a fixed list."""
    return ExponentialBackoff(base_seconds, max_seconds)


_REGISTRY: dict = {}


def registered_tasks() -> list:
    """The tasks this plugin holds, in the order they were declared."""
    return list(_REGISTRY.values())


# Python's logging levels, highest first, as the host's; anything lower is trace.
_HOST_LEVELS = ((logging.ERROR, "error"), (logging.WARNING, "warning"), (logging.INFO, "info"), (logging.DEBUG, "debug"))


class _HostHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = next((name for floor, name in _HOST_LEVELS if record.levelno >= floor), "trace")
            _host.log(name, self.format(record))
        except Exception:  # a log line must never fail the task
            self.handleError(record)


_logger = logging.getLogger("weir.task")
_logger.setLevel(logging.DEBUG)
_logger.propagate = False
_logger.addHandler(_HostHandler())


def get_run_logger() -> logging.Logger:
    """A `logging.Logger` whose lines go to the current task run's log (stderr natively)."""
    return _logger


def _ms(seconds: Any, option: str) -> int:
    if isinstance(seconds, datetime.timedelta):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise TypeError(f"{option} must be a number of seconds >= 0 or a timedelta, got {seconds!r}")
    return round(seconds * 1000)


def _string_list(value: Any, option: str) -> list:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{option} must be a list of strings, got {value!r}")
    return list(value)


class Task:
    """A function marked `@task`: still callable as the plain function (`.fn` is the original)."""

    def __init__(self, fn: Callable, **options: Any):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = options.get("name") or fn.__name__.replace("_", "-")
        self.description = options.get("description") or inspect.getdoc(fn)
        self.version = options.get("version")
        self.tags = _string_list(options.get("tags") or [], "tags")
        self.retries = options.get("retries") or 0
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise TypeError(f"retries must be an integer >= 0, got {self.retries!r}")
        delay = options.get("retry_delay_seconds")
        self.retry_backoff = None
        self.retry_delays_ms = []
        if isinstance(delay, ExponentialBackoff):
            self.retry_backoff = (
                _ms(delay.base_seconds, "exponential_backoff"),
                None if delay.max_seconds is None else _ms(delay.max_seconds, "exponential_backoff"),
            )
        elif isinstance(delay, (list, tuple)):
            self.retry_delays_ms = [_ms(d, "retry_delay_seconds") for d in delay]
        elif delay is not None:
            self.retry_delays_ms = [_ms(delay, "retry_delay_seconds")]
        jitter = options.get("retry_jitter_factor")
        if jitter is not None and (isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0):
            raise TypeError(f"retry_jitter_factor must be a number >= 0, got {jitter!r}")
        self.retry_jitter_factor = None if jitter is None else float(jitter)
        timeout = options.get("timeout_seconds")
        self.timeout_ms = None if timeout is None else _ms(timeout, "timeout_seconds")
        self.cache_key_fn = options.get("cache_key_fn")
        if self.cache_key_fn is not None and not callable(self.cache_key_fn):
            raise TypeError(f"cache_key_fn must be a function, got {self.cache_key_fn!r}")
        policy = options.get("cache_policy")
        if policy not in (None, INPUTS, NONE):
            raise TypeError(f"cache_policy must be weir.INPUTS or weir.NONE, got {policy!r}")
        self.cache_policy = "custom-key" if self.cache_key_fn else (policy or NONE)
        expiration = options.get("cache_expiration")
        self.cache_expiration_ms = None if expiration is None else _ms(expiration, "cache_expiration")
        self.log_prints = options.get("log_prints", True)
        if not isinstance(self.log_prints, bool):
            raise TypeError(f"log_prints must be True or False, got {self.log_prints!r}")
        self.run_name = options.get("task_run_name")
        if self.run_name is not None and not isinstance(self.run_name, str):
            raise TypeError(
                "task_run_name must be a template string such as 'fetch-{url}' (the host names runs), "
                f"got {self.run_name!r}"
            )
        self.needs = _string_list(options.get("needs") or [], "needs")
        self._read_signature(fn)

    def _read_signature(self, fn: Callable) -> None:
        hints = typing.get_type_hints(fn, include_extras=True)
        self.parameters = []  # (name, hint, required)
        self.takes_any = False
        properties = {}
        required = []
        for parameter in inspect.signature(fn).parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                self.takes_any = True
                continue
            if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
                raise TypeError(
                    f"task `{self.name}`: parameter `{parameter.name}` must be passable by name "
                    "(the input is a JSON object with one field per parameter)"
                )
            hint = hints.get(parameter.name, Any)
            optional = parameter.default is not inspect.Parameter.empty
            self.parameters.append((parameter.name, hint, optional))
            properties[parameter.name] = schema(hint)
            if not optional:
                required.append(parameter.name)
        self.input_schema = object_schema(properties, required)
        if self.takes_any:
            self.input_schema["additionalProperties"] = True
        self.output_schema = schema(hints["return"]) if "return" in hints else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<weir task {self.name}>"

    def bind(self, input_text: str) -> dict:
        """The keyword arguments for this input (JSON text); raises Fatal when it does not fit."""
        try:
            return self._bind(input_text)
        except InputError as error:
            raise Fatal(f"invalid input for task `{self.name}`: {error}") from None

    def _bind(self, input_text: str) -> dict:
        try:
            value = json.loads(input_text) if input_text.strip() else None
        except ValueError as error:
            raise InputError("", f"not JSON: {error}") from None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise InputError("", "expected a JSON object with one field per parameter")
        known = {name for name, _, _ in self.parameters}
        kwargs = {}
        if not self.takes_any:
            unknown = [key for key in value if key not in known]
            if unknown:
                raise InputError("", unknown_message(unknown[0], [name for name, _, _ in self.parameters]))
        else:
            kwargs.update({k: v for k, v in value.items() if k not in known})
        for name, hint, optional in self.parameters:
            if name in value:
                kwargs[name] = convert(value[name], hint, name)
            elif not optional:
                raise InputError("", f"missing field `{name}`")
        return kwargs

    def run_json(self, input_text: str) -> str:
        """Runs the task on JSON input and returns JSON output, as the host would."""
        result = self.fn(**self.bind(input_text))
        try:
            return json.dumps(to_json_value(result), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise Fatal(f"task `{self.name}` returned a value that is not JSON: {error}") from None

    def cache_key_json(self, input_text: str) -> Optional[str]:
        """The custom cache key for this input, or None for "do not cache"."""
        if self.cache_key_fn is None:
            return None
        try:
            parameters = self._bind(input_text)
        except InputError:
            return None  # the run itself will fail and say why
        takes_context = len(inspect.signature(self.cache_key_fn).parameters) >= 2
        key = self.cache_key_fn(_host.context(), parameters) if takes_context else self.cache_key_fn(parameters)
        return None if key is None else str(key)


def task(
    fn: Optional[Callable] = None,
    *,
    name: Optional[str] = None,
    description: Optional[str] = None,
    version: Optional[str] = None,
    tags: Optional[list] = None,
    retries: int = 0,
    retry_delay_seconds: Union[float, list, ExponentialBackoff, None] = None,
    retry_jitter_factor: Optional[float] = None,
    timeout_seconds: Optional[float] = None,
    cache_policy: Optional[str] = None,
    cache_key_fn: Optional[Callable] = None,
    cache_expiration: Union[datetime.timedelta, float, None] = None,
    log_prints: bool = True,
    task_run_name: Optional[str] = None,
    needs: Optional[list] = None,
) -> Any:
    """Marks a function as a weir task, with the defaults a flow may still override.

    Used bare (`@task`) or with options (`@task(retries=3)`), as in Prefect. `log_prints` is on by
    default: in the sandbox, a task's stdout has nowhere else to go.
    """
    options = dict(
        name=name,
        description=description,
        version=version,
        tags=tags,
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
        retry_jitter_factor=retry_jitter_factor,
        timeout_seconds=timeout_seconds,
        cache_policy=cache_policy,
        cache_key_fn=cache_key_fn,
        cache_expiration=cache_expiration,
        log_prints=log_prints,
        task_run_name=task_run_name,
        needs=needs,
    )

    def register(function: Callable) -> Task:
        marked = Task(function, **options)
        if marked.name in _REGISTRY and _REGISTRY[marked.name].fn is not function:
            raise ValueError(f"two tasks are named `{marked.name}`; give one of them another name=")
        _REGISTRY[marked.name] = marked
        return marked

    return register(fn) if fn is not None else register
