"""Progress of the data steps TFX runs for us (StatisticsGen, Transform,
Evaluator), measured by what they have read of their input examples.

Those components build their own Beam pipelines, so no line of ours runs per
example inside them. What we can see, on the machine a local run uses, is
how far each process of the run has read into the input artifact's files:
the file offsets the kernel keeps (/proc/<pid>/fdinfo), for the runner's
process and its Beam worker processes. With the bytes of each split, the
passes the component makes over it (Transform reads its analysed split
twice: analyse, then transform) and the audio-seconds and utterances per
byte from the ingestion report, that is utterances and audio-hours done, a
rate and the time left. Where /proc is not there (not Linux), it says
nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from typing import Dict, List, Optional, Tuple

from models import config

_PROC = "/proc"


@dataclasses.dataclass
class Input:
    """What a running component reads: its examples' files and passes."""
    node: str
    files: Dict[str, int]  # path -> bytes
    passes: Dict[str, int]  # path -> times the component reads it
    seconds_per_byte: float
    utterances_per_byte: float

    @property
    def total_bytes(self) -> int:
        return sum(size * self.passes[path] for path, size in self.files.items())


def _splits_read(node: str, exec_properties: Dict) -> Optional[Dict[str, int]]:
    """{split: passes} a component makes over its input examples, from its
    exec properties; None for a component this module does not follow."""
    def splits(key):
        value = exec_properties.get(key)
        return json.loads(value) if isinstance(value, str) and value else (
            value or {})
    if node.startswith("StatisticsGen"):
        excluded = set(splits("exclude_splits") or [])
        return {"*": 1, **{s: 0 for s in excluded}}
    if node.startswith("Transform"):
        cfg = splits("splits_config")
        passes: Dict[str, int] = {}
        for split in cfg.get("analyze", []):
            passes[split] = passes.get(split, 0) + 1
        for split in cfg.get("transform", []):
            passes[split] = passes.get(split, 0) + 1
        return passes or {"*": 2}
    if node.startswith("Evaluator"):
        return {s: 1 for s in (splits("example_splits") or ["eval"])}
    return None


def running_input(store, pipeline_name: str, node: str) -> Optional[Input]:
    """The input examples of node's running execution, or None."""
    from tools import metadata

    executions = metadata.component_executions(store, pipeline_name).get(
        node, [])
    running = [e for e in executions
               if e.last_known_state == metadata.Execution.RUNNING]
    execution = metadata.latest(running)
    if execution is None:
        return None
    props = {k: metadata.property_value(v)
             for k, v in execution.properties.items()}
    passes = _splits_read(node, props)
    examples = metadata.artifacts_by_key(store, execution.id).get("examples")
    if passes is None or not examples:
        return None
    from tfx.dsl.io import fileio

    artifact = examples[0]
    if "://" in artifact.uri:
        return None  # a bucket's reads leave no file offsets to follow
    files, file_passes = {}, {}
    for split in json.loads(
            artifact.properties["split_names"].string_value or "[]"):
        n = passes.get(split, passes.get("*", 0))
        if not n:
            continue
        for path in fileio.glob(os.path.join(artifact.uri, f"Split-{split}",
                                             "*")):
            files[path] = fileio.stat(path).length
            file_passes[path] = n
    if not files:
        return None
    report = metadata.ingestion_report(artifact) or {}
    total = report.get("total", {})
    raw_bytes = sum(files.values())
    return Input(node, files, file_passes,
                 float(total.get("audio_seconds", 0)) / raw_bytes,
                 float(total.get("written", 0)) / raw_bytes)


def _processes() -> List[int]:
    """This process and its descendants."""
    me = os.getpid()
    parents: Dict[int, int] = {}
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(_PROC, name, "stat")) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    mine = {me}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return sorted(mine)


def open_offsets(paths) -> Dict[Tuple[int, int, str], int]:
    """{(pid, fd, path): offset} of every open file among `paths` in this
    process tree."""
    wanted = set(paths)
    found = {}
    for pid in _processes():
        fd_dir = os.path.join(_PROC, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
                if target not in wanted:
                    continue
                with open(os.path.join(_PROC, str(pid), "fdinfo", fd)) as f:
                    pos = int(f.readline().split()[1])
            except (OSError, ValueError, IndexError):
                continue
            found[(pid, int(fd), target)] = pos
    return found


class ReadProgress:
    """Bytes a component has read of its input: files it has closed count
    whole (readers read sequentially to the end), open ones to their
    offset."""

    def __init__(self, step: Input):
        self.step = step
        self._open: Dict[Tuple[int, int, str], int] = {}
        self._closed_bytes = 0
        self.started = time.time()

    def sample(self) -> int:
        now = open_offsets(self.step.files)
        for key in set(self._open) - set(now):
            self._closed_bytes += self.step.files[key[2]]
        self._open = now
        return self._closed_bytes + sum(now.values())

    def line(self) -> str:
        done = min(self.sample(), self.step.total_bytes)
        elapsed = max(time.time() - self.started, 1e-6)
        fraction = done / max(self.step.total_bytes, 1)
        left = elapsed * (1 - fraction) / fraction if fraction else None
        audio = done * self.step.seconds_per_byte
        parts = [f"{self.step.node}: {fraction:.0%} of its reading"]
        if audio:
            parts.append(f"{done * self.step.utterances_per_byte:,.0f} "
                         f"utterances, {audio / 3600:.2f} audio-hours, "
                         f"{audio / elapsed:.0f} audio-s/s")
        if left is not None:
            parts.append(f"about {left:.0f} s left")
        return ", ".join(parts)


class Monitor(threading.Thread):
    """Every config.PROGRESS_SECONDS, a progress line for the component that
    is running, if it is one ReadProgress follows."""

    def __init__(self, metadata_path: str, pipeline_name: str):
        super().__init__(daemon=True, name="read-progress")
        self._metadata_path = metadata_path
        self._pipeline_name = pipeline_name
        self._node: Optional[str] = None
        self._progress: Optional[ReadProgress] = None
        self._stop = threading.Event()

    def component_started(self, node: str) -> None:
        self._node, self._progress = node, None

    def component_finished(self) -> None:
        self._node, self._progress = None, None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        if not os.path.isdir(_PROC):
            return
        log = logging.getLogger(config.PROGRESS_LOGGER)
        while not self._stop.wait(config.PROGRESS_SECONDS):
            node = self._node
            if node is None:
                continue
            try:
                if self._progress is None or self._progress.step.node != node:
                    from tools import metadata
                    step = running_input(metadata.open_store(
                        self._metadata_path), self._pipeline_name, node)
                    self._progress = ReadProgress(step) if step else None
                    # Its first line a tick later, with a rate measured
                    # over it: a step's first seconds read nothing yet
                    # (the demo's steps printed "0% of its reading").
                    continue
                if self._progress is not None and self._node == node:
                    log.info("%s", self._progress.line())
            except Exception:  # pylint: disable=broad-except
                # Progress is a courtesy: it never breaks a run.
                self._progress = None
