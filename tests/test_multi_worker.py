"""`run_fn` under MultiWorkerMirroredStrategy: two worker processes on
localhost, as a TFJob or a Vertex worker pool runs them.

One job, trained once and shared by every test (module fixture): each
worker (tests/multi_worker_replica.py) gets TF_CONFIG naming both and the
same FnArgs over the pipeline's own ExampleGen and Transform outputs, and
reads its own shard of the records. Worker 1 dies before step 2, after the
step-1 backup; with a dead peer the chief cannot go on, so it is stopped
too, and the whole job restarts (both workers, new ports), as a TFJob's
restartPolicy OnFailure does. The restarted job must resume from the backup
and finish on both workers with equal weights, the chief's export alone in
the model artifact.
"""

import collections
import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multi_worker_replica as replica
from conftest import REPO_ROOT
from models import serving

pytestmark = pytest.mark.slow

WORKERS = 2
TRAIN_STEPS = 2
CRASHED_WORKER, CRASH_AT_STEP = 1, 1
RUN_TIMEOUT_S = 420
REPLICA = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "multi_worker_replica.py")

Job = collections.namedtuple("Job", "out first_exit_codes exit_codes logs")


def _free_ports(n):
    """n ports free on localhost now (held together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(tf_config):
    """This process's environment for a worker: localhost only, no proxy
    (gRPC would honour one), this checkout's modules first."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "grpc_proxy",
                                "all_proxy")}
    env.update(TF_CONFIG=json.dumps(tf_config), TF_USE_LEGACY_KERAS="1",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               no_proxy="localhost,127.0.0.1", NO_PROXY="localhost,127.0.0.1",
               CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(
                   [REPO_ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                  if p]))
    return env


def _launch(steps, out, run, crash=None):
    """Starts the WORKERS replicas of one run of the job: [(Popen, log)]."""
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(WORKERS)]}
    workers = []
    for index in range(WORKERS):
        args = [sys.executable, REPLICA,
                "--examples", steps.examples.uri,
                "--transform-graph", steps.transform_graph.uri,
                "--out", out, "--train-steps", str(TRAIN_STEPS)]
        if crash and crash[0] == index:
            args += ["--crash-at-step", str(crash[1])]
        log = os.path.join(out, "logs", f"{run}-worker-{index}.log")
        with open(log, "w") as f:
            proc = subprocess.Popen(
                args, stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                env=_env({"cluster": cluster,
                          "task": {"type": "worker", "index": index}}))
        workers.append((proc, log))
    return workers


def _tail(log, lines=30):
    with open(log) as f:
        return "".join(f.readlines()[-lines:])


def _wait(proc, log, timeout):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker timed out after {timeout} s:\n{_tail(log)}")


def _chief_backup(out):
    """The chief's latest backup checkpoint state file, or None."""
    found = glob.glob(os.path.join(out, replica.BACKUP_DIR, "*", "chief",
                                   "checkpoint"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def job(ci_steps, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("multi_worker"))
    os.makedirs(os.path.join(out, "logs"))
    workers = _launch(ci_steps, out, "first",
                      crash=(CRASHED_WORKER, CRASH_AT_STEP))
    try:
        crashed = _wait(*workers[CRASHED_WORKER], RUN_TIMEOUT_S)
        # The chief is blocked in a collective with its dead peer: once its
        # step backup is written, stop it as the operator would.
        deadline = time.time() + 60
        while _chief_backup(out) is None and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(2)
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    first = {i: proc.returncode for i, (proc, _) in enumerate(workers)}
    first[CRASHED_WORKER] = crashed
    assert _chief_backup(out), _tail(workers[0][1])

    restarted = _launch(ci_steps, out, "restart")
    try:
        codes = [_wait(proc, log, RUN_TIMEOUT_S) for proc, log in restarted]
    finally:
        for proc, _ in restarted:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Job(out, first, codes, [log for _, log in restarted])


def _history(directory):
    with open(os.path.join(directory, serving.HISTORY_FILE)) as f:
        return json.load(f)


def _non_chief_dir(out):
    from models import trainer
    return os.path.join(out, replica.RUN_DIR, trainer.NON_CHIEF_MODEL_DIR,
                        "worker-1")


def test_both_workers_of_the_restarted_job_finish(job):
    for code, log in zip(job.exit_codes, job.logs):
        assert code == 0, _tail(log)
    history = _history(os.path.join(job.out, replica.SERVING_DIR))
    assert history["workers"] == WORKERS
    assert history["steps"] == TRAIN_STEPS
    assert all(np.isfinite(history["history"]["loss"]))
    assert "val_loss" in history["history"]  # the repeated eval shards


def test_weights_are_equal_across_workers_after_training(job):
    weights = {}
    for name in ("worker-0", "worker-1"):
        with np.load(os.path.join(job.out, replica.WEIGHTS_DIR,
                                  f"{name}.npz")) as f:
            weights[name] = [f[k] for k in sorted(f.files, key=lambda k: int(
                k.split("_")[1]))]
    assert len(weights["worker-0"]) == len(weights["worker-1"]) > 0
    for a, b in zip(weights["worker-0"], weights["worker-1"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_only_the_chiefs_export_lands_in_the_model_artifact(job):
    serving_dir = os.path.join(job.out, replica.SERVING_DIR)
    assert _history(serving_dir)["task"] == "worker-0"
    assert serving.TRAINED_PRESET in os.listdir(serving_dir)
    assert not any("worker-1" in name for name in os.listdir(serving_dir))
    # The other worker saved too (saving is collective), in a scratch dir of
    # the model run, not the model artifact.
    scratch = _non_chief_dir(job.out)
    assert _history(scratch)["task"] == "worker-1"
    assert not os.path.commonpath([scratch, serving_dir]) == serving_dir


def test_a_killed_worker_resumes_from_the_backup_on_restart(job):
    assert job.first_exit_codes[CRASHED_WORKER] == replica.CRASH_EXIT_CODE
    # The restarted job began at the backup's step on both workers, not 0,
    # and ran only what was left.
    for directory in (os.path.join(job.out, replica.SERVING_DIR),
                      _non_chief_dir(job.out)):
        history = _history(directory)
        assert history["initial_step"] == CRASH_AT_STEP, directory
        assert history["epochs"] == 1
    # A finished job leaves no backup to resume from.
    assert _chief_backup(job.out) is None
