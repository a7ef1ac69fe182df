"""Shared test setup: Keras 2 for the whole session, before TensorFlow loads."""

import os
import sys

# TFT is Keras-2 only; decide tf.keras once, before anything imports TF.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

EMBEDDED_CORPUS = os.path.join(REPO_ROOT, "data", "embedded-corpus")

import pytest  # noqa: E402


def tiny_preset(**train_overrides):
    """The ci preset with these TrainConfig fields replaced."""
    import dataclasses
    from models import config

    preset = config.get_preset("ci")
    return dataclasses.replace(
        preset, train=dataclasses.replace(preset.train, **train_overrides))


@pytest.fixture(scope="session")
def ci_steps(tmp_path_factory):
    """The pipeline's own ExampleGen and Transform on a few utterances, for
    the ci preset (session scope: test_data and test_multi_worker share
    them)."""
    import pipeline_steps
    tmp = str(tmp_path_factory.mktemp("ci_steps"))
    return pipeline_steps.ingest_and_transform(tmp, tiny_preset())


# Real pipeline runs shared by test_gating, test_lineage and test_report
# (session scope: run once however many of those files are selected).
from gating_runs import gated_runs  # noqa: E402,F401


# Once tensorflow-io's S3 filesystem is loaded (an object_store test, or a
# module import test), the interpreter's own exit aborts (status 134, see
# pipeline/storage.py): end the session with pytest's status instead.
def pytest_sessionfinish(session, exitstatus):
    session.config._moonshine_exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "tensorflow_io" in sys.modules:
        from pipeline import storage
        storage.exit_process(getattr(config, "_moonshine_exit_status", 0))
