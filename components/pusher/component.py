"""Pusher: TFX's Pusher, except that it never pushes the serving model again.

A re-run of an unchanged pipeline takes the Trainer's and the ModelExporter's
outputs from the cache, but the Evaluator runs again (its baseline, the latest
blessed model, is now that very model), blesses it, and TFX's Pusher would
copy it to a new serving version. This one compares the candidate with the
newest pushed version first: each version it pushes records the Model
artifact it came from (`SOURCE_FILE`), and a candidate that is that artifact
is not pushed again (`pushed` 0, `already_serving` names the version).
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.pusher import executor


class Pusher(tfx.components.Pusher):
    """tfx.components.Pusher that pushes a given model at most once in a row."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
