"""The Beam runner is named for every local run: no download at run time.

Beam's default DirectRunner first tries its Prism runner, whose binary it
downloads from the internet into ~/.apache_beam/cache/prism; offline or on an
air-gapped cluster that is a wasted attempt at an outside address before
every data step. pipeline/beam.py names the FnApiRunner instead.
"""

import functools
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from pipeline import beam

PRISM_CACHE = os.path.join(".apache_beam", "cache", "prism")


def test_every_arg_list_names_a_runner():
    for args in (beam.local_args(), beam.local_args(["--direct_num_workers=2"]),
                 beam.kubeflow_args(), beam.worker_args(2)):
        assert sum(a.startswith("--runner=") for a in args) == 1, args
        assert beam.LOCAL_RUNNER in args or beam.POOL_RUNNER in args
    # A runner the user names is kept, not doubled.
    flink = ["--runner=FlinkRunner", "--flink_master=h:8081"]
    assert beam.local_args(flink) == flink


def _run(code_or_args, home, timeout=300, **env):
    env = dict(os.environ, HOME=str(home), TF_USE_LEGACY_KERAS="1", **env)
    return subprocess.run([sys.executable, *code_or_args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_beams_default_would_try_the_download(tmp_path):
    """The check below can fail: Beam's own default does make the attempt."""
    result = _run(["-c", "import apache_beam as beam\n"
                   "with beam.Pipeline() as p:\n"
                   "    p | beam.Create([1, 2]) | beam.Map(str)\n"],
                  tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.isdir(tmp_path / PRISM_CACHE)


@pytest.mark.slow
def test_a_pipeline_run_makes_no_download_attempt(tmp_path):
    """`validate-data` runs ExampleGen, StatisticsGen and ExampleValidator
    on Beam: afterwards there is no Prism cache and no word of Prism."""
    from gating_runs import tiny_corpus

    corpus = tiny_corpus(str(tmp_path / "corpus"), per_subset_speakers=1)
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    result = _run(["-m", "tools.cli", "validate-data", "--data-root", corpus,
                   "--output-dir", str(tmp_path / "out")], home,
                  # The CLI's own default, as in a user's shell (the test
                  # session's is 2).
                  TMPDIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not os.path.exists(home / ".apache_beam")
    assert "prism" not in (result.stdout + result.stderr).lower()
    # The pool's workers print nothing a user cannot act on: no library
    # warnings, no TensorFlow INFO records, no CUDA-plugin errors.
    for noise in ("FutureWarning", "INFO:tensorflow", "Unable to register"):
        assert noise not in result.stderr, result.stderr[-3000:]
    # Nor does TFX build (and leave behind) an sdist of itself per Beam step
    # for workers that would install it (pipeline.beam.LOCAL_ENVIRONMENT).
    assert not list(scratch.glob("*/build/tfx")), sorted(scratch.iterdir())


def _pid_and_preloaded(_):
    import sys  # pylint: disable=import-outside-toplevel
    return os.getpid(), "tensorflow_transform.beam" in sys.modules


def test_pool_runner_spreads_work_over_warm_worker_processes():
    """Two workers, each a forkserver child that already holds TFT (Beam's
    own multi_processing workers start a fresh interpreter each)."""
    import apache_beam as beam_sdk
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that

    options = PipelineOptions(beam.worker_args(2))
    with beam_sdk.Pipeline(options=options) as p:
        seen = (p | beam_sdk.Create(range(400))
                | beam_sdk.Map(_pid_and_preloaded)
                | beam_sdk.combiners.ToList())
        assert_that(seen, functools.partial(_check_workers, os.getpid()))


def _check_workers(runner_pid, results):
    (rows,) = results
    pids = {pid for pid, _ in rows}
    assert len(rows) == 400
    assert len(pids) == 2 and runner_pid not in pids, (runner_pid, pids)
    assert all(preloaded for _, preloaded in rows)
