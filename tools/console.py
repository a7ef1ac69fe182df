"""What `moonshine-tfx run` prints while the pipeline runs.

TFX, TensorFlow, Beam and absl log hundreds of lines a user cannot act on
(deprecations, plugin registration, resolved inputs). While a run lasts,
`component_progress` shows instead one line when each component starts and
one when it ends, with its time and its key figure (examples written, WER,
blessed, ...), read back from ML Metadata; errors still show, and so do the
progress lines: the ExampleGen's and the Trainer's own, and, for the TFX
components in between, what they have read of their input
(tools/read_progress.py).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import warnings
from typing import Callable, Dict, Optional, TextIO

# The LocalDagRunner's own messages (tfx/orchestration/local/local_dag_runner.py).
_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution (\d+) is used\.$")
from models.config import PROGRESS_LOGGER, PROGRESS_PREFIX


def progress() -> logging.Logger:
    """The logger for progress lines a user should see during a run."""
    return logging.getLogger(PROGRESS_LOGGER)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def key_figure(store, pipeline_name: str, node_id: str) -> str:
    """A component's headline, from its latest execution's outputs."""
    from tools import metadata

    execution = metadata.latest_execution(store, pipeline_name, node_id)
    if execution is None:
        return ""
    outputs = metadata.artifacts_by_key(store, execution.id,
                                        metadata.OUTPUT_EVENTS)
    if "examples" in outputs and node_id.endswith("ExampleGen"):
        report = metadata.ingestion_report(outputs["examples"][0]) or {}
        total = report.get("total", {})
        written = ", ".join(f"{k}={int(v['written'])}" for k, v in sorted(
            report.get("splits", {}).items()))
        return (f"examples written {written}; "
                f"{int(total.get('quarantined', 0))} quarantined; "
                f"{total.get('audio_seconds', 0) / 3600:.2f} audio-hours")
    if "evaluation" in outputs and _tflite_figure(outputs["evaluation"][0]):
        return _tflite_figure(outputs["evaluation"][0])
    if "evaluation" in outputs:
        m = metadata.read_evaluation(outputs["evaluation"][0].uri).get(
            "metrics", {})
        blessed = [metadata.custom_property(a, "blessed", 0)
                   for a in outputs.get("blessing", [])]
        return (f"eval WER {_pct(m.get('wer'))}, CER {_pct(m.get('cer'))}; "
                f"blessed: {bool(blessed and blessed[0])}")
    if "pushed_model" in outputs:
        pushed = outputs["pushed_model"][0]
        if metadata.custom_property(pushed, "pushed", 0):
            return "pushed " + str(metadata.custom_property(
                pushed, "pushed_destination"))
        serving = metadata.custom_property(pushed, "already_serving")
        return (f"not pushed: already serving {serving}" if serving
                else "not pushed")
    if "anomalies" in outputs:
        return "schema checked"
    return ""


def _tflite_figure(evaluation) -> str:
    """The TFLiteEvaluator's headline (its artifact's custom properties),
    or "" for another kind of evaluation."""
    from models import config
    from tools import metadata

    figures = []
    for variant in config.VARIANTS:
        wer = metadata.custom_property(evaluation, f"{variant}_wer")
        if wer is None:
            return ""
        ok = metadata.custom_property(evaluation, f"{variant}_within_tolerance")
        figures.append(f"{variant} WER {_pct(wer)}" + (
            "" if ok is None else " (ships)" if ok else " (held back)"))
    return "; ".join(figures)


class _ComponentLines(logging.Handler):
    """Turns the runner's start/finish messages into one line each."""

    def __init__(self, figure: Callable[[str], str], out: TextIO,
                 monitor=None):
        super().__init__(logging.INFO)
        self._figure = figure
        self._monitor = monitor
        self._out = out
        self._started: Dict[str, float] = {}
        self._cached: Optional[str] = None
        self._current: Optional[str] = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # pylint: disable=broad-except
            return
        if record.name == PROGRESS_LOGGER:
            self._print(f"    {message}")
            return
        if PROGRESS_PREFIX in message:  # from a Beam worker, relayed
            self._print("    " + message.split(PROGRESS_PREFIX, 1)[1])
            return
        running, finished = _RUNNING.match(message), _FINISHED.match(message)
        if running:
            self._current = running.group(1)
            self._started[self._current] = time.time()
            self._cached = None
            if self._monitor is not None:
                self._monitor.component_started(self._current)
            self._print(f"  {self._current:<30} started")
        elif _CACHED.match(message):
            self._cached = self._current
        elif finished:
            node = finished.group(1)
            if self._monitor is not None:
                self._monitor.component_finished()
            took = time.time() - self._started.pop(node, time.time())
            how = "cached" if self._cached == node else f"done in {took:.1f} s"
            try:
                figure = self._figure(node)
            except Exception as e:  # pylint: disable=broad-except
                figure = f"(could not read its outputs: {e})"
            self._print(f"  {node:<30} {how}" + (f": {figure}" if figure
                                                   else ""))

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)


def _all_handlers():
    """Every handler of every logger that exists now."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values()
        if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers]


@contextlib.contextmanager
def component_progress(metadata_path: str, pipeline_name: str,
                       out: Optional[TextIO] = None):
    """Inside: one line per component start and end, the progress lines,
    and errors; none of the libraries' INFO and WARNING logging."""
    import tensorflow as tf
    from absl import logging as absl_logging

    def figure(node_id: str) -> str:
        from tools import metadata
        store = metadata.open_store(metadata_path)
        return key_figure(store, pipeline_name, node_id)

    from tools import read_progress

    tf.get_logger()  # TensorFlow adds its own stderr handler on first use
    absl_logging.get_absl_handler()
    monitor = read_progress.Monitor(metadata_path, pipeline_name)
    handler = _ComponentLines(figure, out or sys.stdout, monitor)
    root = logging.getLogger()
    muted = [(h, h.level) for h in _all_handlers()]
    saved_root, saved_absl = root.level, absl_logging.get_verbosity()
    for h, _ in muted:
        h.setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.INFO)  # the runner's messages
    root.setLevel(logging.INFO)
    progress().setLevel(logging.INFO)
    root.addHandler(handler)
    monitor.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            monitor.stop()
            root.removeHandler(handler)
            for h, level in muted:
                h.setLevel(level)
            root.setLevel(saved_root)
            absl_logging.set_verbosity(saved_absl)
