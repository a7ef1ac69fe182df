"""The artifact types our components add to TFX's standard ones."""

from __future__ import annotations

from tfx import types


class TFLiteEvaluation(types.Artifact):
    """WER, CER, bytes and latency of a model's TFLite variants, each beside
    its SavedModel's (components/tflite_evaluator)."""
    # The import path of this class, as Kubeflow V2 needs it: its container
    # entrypoint imports a custom type by the title it was compiled with,
    # and KFP titles are `<module>.<Class>` (one dot).
    TYPE_NAME = "components.TFLiteEvaluation"
