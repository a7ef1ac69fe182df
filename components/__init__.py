"""Custom TFX components of moonshine-tfx."""

# Here, so that Kubeflow V2's entrypoint finds it at its TYPE_NAME.
from components.artifacts import TFLiteEvaluation  # noqa: F401
