"""Runs every scenario in weir and in Prefect, one process each, and prints the table.

    python compare.py --weir-bench PATH --weir PATH --python PATH [--quick] [--json FILE]

Each side prints one JSON line per scenario; this script adds the wall time of fresh
processes (scenario 7) and the peak resident memory of each scenario's whole process tree
(Prefect runs its API server in a subprocess), sampled every 20 ms from /proc.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = ["sequential", "map", "cache-hit", "retries", "timeout", "limit", "hello", "python"]


def tree_rss_kib(root: int) -> int:
    """Resident memory of `root` and all its descendants."""
    children: dict = {}
    rss: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/status") as status:
                kib = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = kib
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run(command: list, env: dict, timeout: float) -> tuple:
    """Runs `command`; returns (its JSON result or an error, wall seconds, peak tree RSS in MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_kib(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        return {"error": f"still running after {timeout:.0f} s, killed"}, time.perf_counter() - started, peak[0] / 1024
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        last = stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"exit code {process.returncode}: {last[0]}"}, wall, peak[0] / 1024
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"output": stdout.strip()}
    return result, wall, peak[0] / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weir-bench", required=True)
    parser.add_argument("--weir", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        # One Prefect home (its database) and one weir store for the run, both made ready by
        # an untimed hello-world first: Prefect creates and migrates its database, weir compiles
        # the plugin into its cache. What is timed is a user's second run, not their first.
        prefect_env = dict(
            os.environ,
            PREFECT_HOME=str(Path(scratch) / "prefect"),
            PREFECT_LOGGING_LEVEL="WARNING",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
            DO_NOT_TRACK="1",
        )
        weir_hello = [args.weir, "--store", str(Path(scratch) / "weir"), "run", str(HERE / "hello.toml")]
        prefect_hello = [args.python, str(HERE / "prefect_scenarios.py"), "hello"]
        print("warming up: weir and Prefect hello-world", file=sys.stderr, flush=True)
        for command, env in [(weir_hello, dict(os.environ)), (prefect_hello, prefect_env)]:
            warm = run(command, env, 600)
            if "error" in warm[0]:
                sys.exit(f"warm-up failed: {' '.join(command)}: {warm[0]['error']}")
        for scenario in SCENARIOS:
            if scenario == "hello":
                weir_command = weir_hello
            else:
                weir_command = [args.weir_bench, scenario, *quick]
            prefect_command = [args.python, str(HERE / "prefect_scenarios.py"), scenario, *quick]
            print(f"{scenario}: weir", file=sys.stderr, flush=True)
            weir = run(weir_command, dict(os.environ), 300)
            print(f"{scenario}: prefect", file=sys.stderr, flush=True)
            prefect = run(prefect_command, prefect_env, 120 if scenario == "timeout" else 600)
            results[scenario] = {"weir": weir, "prefect": prefect}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print_table(results)
    failed = [name for name, sides in results.items() for side in sides.values() if "error" in side[0]]
    if failed:
        sys.exit(f"scenarios that did not run: {', '.join(sorted(set(failed)))}")


def print_table(results: dict) -> None:
    def cell(side: tuple, key: str, scale: float = 1.0, unit: str = "") -> str:
        value = side[0].get(key)
        if value is None:
            return side[0].get("error", "—")
        return f"{value * scale:,.1f}{unit}"

    def ratio(weir: tuple, prefect: tuple, key: str) -> str:
        w, p = weir[0].get(key), prefect[0].get(key)
        return f"{p / w:,.0f}×" if w and p else "—"

    rows = []
    r = results
    for scenario, label, key, scale, unit in [
        ("sequential", "1. 1,000 sequential tasks in a flow: per task", "per_task_us", 1, " µs"),
        ("map", "2. map of 10,000 tasks: per task", "per_task_us", 1, " µs"),
        ("cache-hit", "3. cache hit: per task", "per_task_us", 1, " µs"),
        ("retries", "4. fails twice, 0-delay retries: per retry", "per_retry_us", 1, " µs"),
        ("python", "8. the same Python task body: per task", "per_task_us", 1, " µs"),
    ]:
        weir, prefect = r[scenario]["weir"], r[scenario]["prefect"]
        bare = cell(weir, "bare_us", 1, " µs") if "bare_us" in weir[0] else ""
        rows.append((label, cell(weir, key, scale, unit), cell(prefect, key, scale, unit), ratio(weir, prefect, key), bare))
    weir, prefect = r["map"]["weir"], r["map"]["prefect"]
    # weir-bench reports its own peak too: a short run may end between two samples.
    weir = (weir[0], weir[1], max(weir[2], weir[0].get("peak_rss_mib", 0)))
    rows.append(("2. map of 10,000 tasks: peak RSS, process tree", f"{weir[2]:,.0f} MiB", f"{prefect[2]:,.0f} MiB", f"{prefect[2] / weir[2]:,.1f}×" if weir[2] else "—", ""))
    weir, prefect = r["timeout"]["weir"], r["timeout"]["prefect"]
    describe = lambda side: (f"{side[0]['state']} after {side[0]['seconds']:.2f} s" if "seconds" in side[0] else side[0].get("error", "—"))
    rows.append(("5. busy loop, 1 s timeout: until the run ends", describe(weir), describe(prefect), ratio(weir, prefect, "seconds"), ""))
    weir, prefect = r["limit"]["weir"], r["limit"]["prefect"]
    rows.append(("6. 20 × 0.2 s tasks, tag limit 2: total", cell(weir, "seconds", 1, " s"), cell(prefect, "seconds", 1, " s"), ratio(weir, prefect, "seconds"), ""))
    weir, prefect = r["hello"]["weir"], r["hello"]["prefect"]
    rows.append(("7. hello-world flow, fresh process: wall", f"{weir[1] * 1000:,.0f} ms", f"{prefect[1] * 1000:,.0f} ms", f"{prefect[1] / weir[1]:,.0f}×", ""))
    print("| scenario | weir | Prefect | Prefect / weir | bare wasmtime |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
