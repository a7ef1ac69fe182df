"""Shared benchmark plumbing: timing, memory, and the BENCHMARKS.md table writer."""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from typing import Callable, List, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(REPO_ROOT, "BENCHMARKS.md")


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Minimum wall time of `repeats` calls: the least disturbed measurement."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> str:
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.+)", f.read())
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def update_benchmarks_md(section: str, command: str,
                         rows: Sequence[Tuple[str, str]]) -> None:
    """Replaces (or appends) `## section` in BENCHMARKS.md with a fresh table."""
    body: List[str] = [f"## {section}", "",
                       f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}.",
                       f"Command: `{command}`", "",
                       "| measure | value |", "| --- | --- |"]
    body += [f"| {k} | {v} |" for k, v in rows]
    text = ""
    if os.path.exists(BENCHMARKS_MD):
        with open(BENCHMARKS_MD) as f:
            text = f.read()
    if not text:
        text = ("# Benchmarks\n\nRatios are measured side by side in one run; "
                "absolute numbers hold for the machine named in each section.\n")
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = "\n".join(body) + "\n\n"
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else (
        text.rstrip("\n") + "\n\n" + block)
    with open(BENCHMARKS_MD, "w") as f:
        f.write(text.rstrip("\n") + "\n")
