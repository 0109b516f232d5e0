"""Prefect's side of the benchmark against weir (bench/run): one scenario per process, its
result as one JSON line on stdout. `--quick` runs tiny sizes (a smoke run).

    python prefect_scenarios.py sequential|map|cache-hit|retries|timeout|limit|python|hello [--quick]

The task bodies are the ones weir runs: trivial additions, a counter that fails twice, a busy
loop, a 0.2 s sleep, and the same word-count body as weir's Python plugin.
"""

import asyncio
import json
import sys
import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS
from prefect.runtime import task_run

QUICK = "--quick" in sys.argv
SCENARIO = next((arg for arg in sys.argv[1:] if not arg.startswith("--")), "")


@task
def add(a: int, b: int) -> int:
    return a + b


@task(cache_policy=INPUTS)
def cached_add(a: int, b: int) -> int:
    return a + b


@task(retries=2, retry_delay_seconds=0)
def flaky(succeed_on: int) -> str:
    attempt = task_run.run_count
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


@task(timeout_seconds=1)
def spin() -> None:
    n = 0
    while True:
        n += 1


@task(tags=["db"])
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def word_stats(text: str) -> dict:
    words = text.split()
    get_run_logger().info("counted %d words", len(words))
    return {"text": text, "words": len(words), "letters": sum(c.isalpha() for c in text)}


@task
def hello(name: str) -> str:
    get_run_logger().info("greeting %s", name)
    return f"Hello, {name}!"


@flow
def chain(count: int) -> int:
    x = 0
    for _ in range(count):
        x = add(x, 1)
    return x


@flow
def mapped(count: int) -> list:
    return [future.result() for future in add.map(range(count), 1)]


@flow
def cache_hits(count: int) -> None:
    for _ in range(count):
        cached_add(1, 2)


@flow
def retried(succeed_on: int, repeats: int) -> None:
    for _ in range(repeats):
        flaky(succeed_on)


@flow
def timed_out() -> str:
    state = spin(return_state=True)
    return state.type.value


@flow
def limited(count: int, seconds: float) -> list:
    return [future.result() for future in sleepy.map([seconds] * count)]


@flow
def words(count: int) -> None:
    for _ in range(count):
        word_stats("the quick brown fox jumps over the lazy dog")


@flow
def hello_flow() -> str:
    return hello("weir")


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


async def set_limit(tag: str, limit: int) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.create_concurrency_limit(tag=tag, concurrency_limit=limit)


def main() -> None:
    if SCENARIO == "hello":
        print(json.dumps({"output": hello_flow()}))
        return
    # Start the ephemeral API server and warm up before anything is timed.
    chain(2)
    if SCENARIO == "sequential":
        count = 20 if QUICK else 1000
        elapsed = timed(lambda: chain(count))
        result = {"tasks": count, "per_task_us": elapsed * 1e6 / count}
    elif SCENARIO == "map":
        count = 100 if QUICK else 10_000
        elapsed = timed(lambda: mapped(count))
        result = {"tasks": count, "per_task_us": elapsed * 1e6 / count}
    elif SCENARIO == "cache-hit":
        count = 10 if QUICK else 200
        cache_hits(1)
        elapsed = timed(lambda: cache_hits(count))
        result = {"tasks": count, "per_task_us": elapsed * 1e6 / count}
    elif SCENARIO == "retries":
        # In one flow each, so that the flow run's own cost cancels out.
        repeats = 3 if QUICK else 100
        once = timed(lambda: retried(1, repeats))
        thrice = timed(lambda: retried(3, repeats))
        result = {"per_retry_us": max(thrice - once, 0) * 1e6 / (2 * repeats)}
    elif SCENARIO == "timeout":
        started = time.perf_counter()
        state = timed_out()
        result = {"state": state, "seconds": time.perf_counter() - started, "deadline_seconds": 1.0}
    elif SCENARIO == "limit":
        count, seconds = (4, 0.05) if QUICK else (20, 0.2)
        asyncio.run(set_limit("db", 2))
        limited(2, 0.01)
        elapsed = timed(lambda: limited(count, seconds))
        result = {"tasks": count, "task_seconds": seconds, "seconds": elapsed}
    elif SCENARIO == "python":
        count = 5 if QUICK else 200
        elapsed = timed(lambda: words(count))
        result = {"tasks": count, "per_task_us": elapsed * 1e6 / count}
    else:
        print(f"unknown scenario `{SCENARIO}`", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
