"""weir's Python test and example tasks: one for each behaviour the host must handle."""

import random
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Optional

from weir import INPUTS, Fatal, get_run_context, get_run_logger, task


@dataclass
class Person:
    name: str
    age: Optional[int] = None


@task(tags=["text"], description="Counts the words and letters of a text.")
def word_stats(text: str) -> dict:
    words = text.split()
    get_run_logger().info("counted %d words", len(words))
    return {"text": text, "words": len(words), "letters": sum(c.isalpha() for c in text)}


@task
def greet(person: Person, greeting: str = "Hello") -> str:
    """Greets a person given as an object (a dataclass)."""
    age = "" if person.age is None else f" ({person.age})"
    return f"{greeting}, {person.name}{age}!"


@task(retries=3, retry_delay_seconds=0)
def flaky(succeed_on: int = 3) -> str:
    """Fails with an ordinary exception until attempt `succeed_on`."""
    attempt = get_run_context().attempt
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


@task(retries=3)
def fatal(reason: str = "the input is wrong") -> None:
    """Raises Fatal: not retried although retries are allowed."""
    raise Fatal(reason)


@task
def spin() -> None:
    """Loops forever, on the CPU."""
    n = 0
    while True:
        n += 1


@task
def hog() -> int:
    """Allocates without bound."""
    chunks = []
    while True:
        chunks.append(bytearray(4 << 20))


@task(cache_policy=INPUTS, cache_expiration=timedelta(hours=1))
def cached(x: int) -> dict:
    """Returns a random nonce, so that a cached result is told from a fresh one."""
    return {"x": x, "nonce": random.random()}


@task(cache_key_fn=lambda context, parameters: parameters["key"])
def keyed(key: str, payload: int) -> dict:
    """Cached by `key` only, whatever the payload."""
    return {"key": key, "payload": payload, "nonce": random.random()}


@task(tags=["meta"], task_run_name="ctx-{label}")
def context(label: str = "x") -> dict:
    """The run context as the task sees it."""
    return asdict(get_run_context())


@task
def chatter() -> str:
    """Logs at every level and prints."""
    logger = get_run_logger()
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line")
    logger.error("an error line")
    print("a printed line")
    return "done"
