"""Shared benchmark plumbing: timing, memory, and the BENCHMARKS.md table writer."""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from typing import Callable, List, Sequence, Tuple

import numpy as np

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


def synthetic_audio(n_clips: int, seconds: float, seed: int = 0) -> np.ndarray:
    """[n_clips, samples] float32 chirps plus noise: speech-like in level and
    spectrum width, deterministic, no corpus needed."""
    from models import config
    rng = np.random.default_rng(seed)
    n = int(seconds * config.SAMPLE_RATE)
    t = np.arange(n) / config.SAMPLE_RATE
    clips = [0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t * (1 + 0.2 * t))
             + 0.03 * rng.standard_normal(n) for i in range(n_clips)]
    return np.asarray(clips, np.float32)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """This CPU's float32 FLOP/s on one big tf.matmul (all intra-op threads)."""
    import tensorflow as tf
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()  # trace + warm up
    return 2.0 * n ** 3 / best_of(repeats, lambda: matmul().numpy())


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a large NumPy copy (counting the read and the write)."""
    src = np.ones(megabytes * 2 ** 20 // 4, np.float32)
    dst = np.empty_like(src)
    return 2.0 * src.nbytes / best_of(repeats, lambda: np.copyto(dst, src))


def silence_eos(model) -> None:
    """Makes a randomly initialised Moonshine never emit </s>, so a decode
    runs exactly to its token cap: the output embedding is tied, and a zero
    </s> row gives </s> logit 0 while the best of the other rows is > 0.
    (</s> is never fed back, so its input embedding does not matter.)"""
    import tensorflow as tf
    from models import config
    table = model.decoder.embedding.embeddings
    table.assign(tf.tensor_scatter_nd_update(
        table, [[config.EOS_ID]], tf.zeros([1, table.shape[1]], table.dtype)))


def machine() -> str:
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        names = re.findall(r"model name\s*:\s*(.+)", info)
        cpu = names[0] if names else cpu
        family = re.search(r"cpu family\s*:\s*(\d+)", info)
        model = re.search(r"^model\s*:\s*(\d+)", info, re.M)
        if family and model:
            cpu += f" family {family.group(1)} model {model.group(1)}"
        flags = set(re.findall(r"flags\s*:\s*(.+)", info)[0].split())
        cpu += ", AVX-512" if "avx512f" in flags else (
            ", AVX2" if "avx2" in flags else "")
    except (OSError, IndexError):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def update_benchmarks_md(section: str, command: str,
                         rows: Sequence[Tuple[str, str]],
                         notes: Sequence[str] = ()) -> None:
    """Replaces (or appends) `## section` in BENCHMARKS.md with a fresh table
    (and notes under it); the machine line gives the 1-minute load average at
    writing, since this machine's cores are shared."""
    load = os.getloadavg()[0]
    body: List[str] = [f"## {section}", "",
                       f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}, "
                       f"load average {load:.1f} at the end.",
                       f"Command: `{command}`", "",
                       "| measure | value |", "| --- | --- |"]
    body += [f"| {k} | {v} |" for k, v in rows]
    body += [line for note in notes for line in ("", note)]
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


def report(rows: Sequence[Tuple[str, str]], ratio: float, *, quick: bool,
           section: str, command: str, notes: Sequence[str] = ()) -> None:
    """Prints the rows, writes them (and notes) into BENCHMARKS.md unless
    --quick, and prints the headline ratio as the last line (e.g. `2.7x`)."""
    if not quick:
        update_benchmarks_md(section, command, rows, notes)
    for key, value in rows:
        print(f"{key}: {value}")
    print(f"{ratio:.1f}x")
