"""The whole pipeline with its corpus, artifacts and pushed model in a bucket.

A real S3 server (moto's server mode) runs on localhost; a few chapters of
the embedded corpus, plus one corrupt FLAC, are uploaded to it, and
`moonshine-tfx run --preset ci` runs in a child process with `--data-root`,
`--pipeline-root` and `--serving-model-dir` in the bucket, exactly as a user
would run it against MinIO or S3. Every client in these tests is pointed at
the local server (tests/object_store.py: endpoint variables, dummy keys, no
profile, no instance metadata). TF 2.16's gs:// filesystem cannot be pointed
at an emulator (README, "Object storage"), so gs:// is not run here.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from conftest import EMBEDDED_CORPUS, REPO_ROOT
from gating_runs import tiny_corpus
from object_store import S3Server, closed_port, merged_env, s3_env
from test_pipeline_e2e import PIPELINE_NODES

CLI = [sys.executable, "-m", "tools.cli"]
# A failure the user must see in seconds, not after the SDKs' minutes of
# retries; a check that needs TensorFlow's filesystem (the subset listing)
# first spends ~10 s importing TensorFlow on this machine, more under load.
FAIL_FAST_SECONDS = 30
CORRUPT_ID = "1001-1-9999"


def _cli(args, env, timeout=900):
    started = time.monotonic()
    # As a user runs it: the CLI's own TensorFlow log level, not pytest's.
    env = {**env, "TF_CPP_MIN_LOG_LEVEL": None}
    proc = subprocess.run(CLI + args, cwd=REPO_ROOT, env=merged_env(env),
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


def _corpus_with_a_corrupt_flac(tmp_path):
    root = tiny_corpus(str(tmp_path / "corpus"))
    chapter = os.path.join(root, "train-clean", "1001", "1")
    if not os.path.isdir(chapter):  # the first chapter of the first speaker
        speaker = os.path.join(root, "train-clean",
                               sorted(os.listdir(os.path.join(
                                   root, "train-clean")))[0])
        chapter = os.path.join(speaker, sorted(os.listdir(speaker))[0])
    speaker_id, chapter_id = chapter.split(os.sep)[-2:]
    corrupt = f"{speaker_id}-{chapter_id}-9999"
    with open(os.path.join(chapter, corrupt + ".flac"), "wb") as f:
        f.write(b"fLaC" + b"\0" * 100)  # a FLAC header and nothing else
    trans = os.path.join(chapter, f"{speaker_id}-{chapter_id}.trans.txt")
    with open(trans, "a") as f:
        f.write(f"{corrupt} A FILE THAT DOES NOT DECODE\n")
    return root, corrupt


@pytest.fixture(scope="module")
def bucket_run(s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("object_store")
    local_corpus, corrupt = _corpus_with_a_corrupt_flac(tmp)
    uploaded = s3.upload_tree(local_corpus, s3.uri("corpus"))
    output_dir = str(tmp / "run")
    proc, seconds = _cli(
        ["run", "--preset", "ci", "--data-root", s3.uri("corpus"),
         "--output-dir", output_dir, "--pipeline-root", s3.uri("root"),
         "--serving-model-dir", s3.uri("serving")], s3.env())
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    with open(os.path.join(output_dir, "summary.json")) as f:
        summary = json.load(f)
    return {"proc": proc, "seconds": seconds, "summary": summary,
            "output_dir": output_dir, "uploaded": uploaded,
            "corrupt": corrupt, "local_corpus": local_corpus}


@pytest.mark.slow
def test_object_store_every_component_executed_with_artifacts_in_the_bucket(
        s3, bucket_run):
    from tools import metadata
    store = metadata.open_store(os.path.join(bucket_run["output_dir"],
                                             "metadata.sqlite"))
    executions = metadata.component_executions(store, "moonshine-tfx")
    for node in PIPELINE_NODES:
        assert executions.get(node), f"{node} never executed"
        assert executions[node][0].last_known_state in (
            metadata_store_pb2.Execution.COMPLETE,
            metadata_store_pb2.Execution.CACHED), node
    # Every artifact ML Metadata recorded lives in the bucket, and the
    # bucket's own listing holds files under each of them.
    listing = s3.list_uris(s3.uri("root"))
    uris = [a.uri for a in store.get_artifacts() if a.uri]
    assert uris
    for uri in uris:
        if "latest_blessed_model_resolver" in uri:
            continue
        assert uri.startswith(s3.uri("root") + "/"), uri
        assert any(o.startswith(uri.rstrip("/") + "/") for o in listing), (
            f"{uri}: nothing in the bucket")
    for node in ("LibriSpeechExampleGen", "StatisticsGen", "Transform",
                 "Trainer", "ModelExporter", "Evaluator", "Pusher"):
        assert any(f"/root/{node}/" in o for o in listing), node
    assert any(o.endswith(".gz") and "/Split-train/" in o for o in listing)


@pytest.mark.slow
def test_object_store_ingestion_counts_reconcile(s3, bucket_run):
    summary = bucket_run["summary"]
    flacs = [u for u in bucket_run["uploaded"] if u.endswith(".flac")]
    ingestion = summary["ingestion"]
    assert ingestion["found"] == len(flacs)
    assert ingestion["quarantined"] == 1
    assert ingestion["found"] == (sum(summary["examples"].values())
                                  + ingestion["quarantined"])
    assert sum(summary["examples"].values()) == ingestion["written"]
    # The corrupt file is named in the train quarantine file, in the bucket,
    # by its URI there.
    quarantine = ingestion["quarantine_files"]["train"]
    bucket, key = quarantine[len("s3://"):].split("/", 1)
    lines = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read(
    ).decode().splitlines()
    [entry] = [json.loads(line) for line in lines]
    assert entry["path"].startswith(s3.uri("corpus") + "/")
    assert entry["path"].endswith(bucket_run["corrupt"] + ".flac")


@pytest.mark.slow
def test_object_store_pushed_model_sits_in_the_bucket_and_transcribes(
        s3, bucket_run):
    summary = bucket_run["summary"]
    assert summary["blessed"] is True
    pushed = summary["pushed_model_dir"]
    assert pushed.startswith(s3.uri("serving") + "/")
    assert f"{pushed}/saved_model.pb" in s3.list_uris(pushed)
    flacs = sorted(u for u in bucket_run["uploaded"]
                   if u.endswith(".flac") and "/test-clean/" in u)[:2]
    local_flacs = [os.path.join(bucket_run["local_corpus"],
                                u.split("/corpus/", 1)[1]) for u in flacs]
    proc, _ = _cli(["transcribe", "--model", s3.uri("serving")]
                   + local_flacs, s3.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The ci preset's model is barely trained: what it says is not checked,
    # only that the model served from the bucket ran on each file.
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == local_flacs, lines


def _one_line_failure(proc, seconds, *needles):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert seconds < FAIL_FAST_SECONDS, seconds
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.slow
def test_object_store_a_bucket_it_lacks_fails_in_seconds(s3, tmp_path):
    uri = "s3://no-such-bucket/corpus"
    proc, seconds = _cli(["run", "--preset", "ci", "--data-root", uri,
                          "--output-dir", str(tmp_path)], s3.env())
    _one_line_failure(proc, seconds, uri, "does not exist")


@pytest.mark.slow
def test_object_store_a_closed_port_fails_in_seconds(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    uri = "s3://moonshine-test/corpus"
    proc, seconds = _cli(["run", "--preset", "ci", "--data-root", uri,
                          "--output-dir", str(tmp_path)], s3_env(endpoint))
    _one_line_failure(proc, seconds, uri, "not reachable", endpoint)


@pytest.mark.slow
def test_object_store_no_credentials_fails_in_seconds(s3, tmp_path):
    uri = s3.uri("corpus")
    proc, seconds = _cli(["run", "--preset", "ci", "--data-root", uri,
                          "--output-dir", str(tmp_path)],
                         s3_env(s3.endpoint, access_key=None))
    _one_line_failure(proc, seconds, uri, "no credentials")


@pytest.mark.slow
def test_object_store_a_data_root_without_subsets_fails_in_seconds(
        s3, tmp_path):
    s3.client.put_object(Bucket=s3.bucket, Key="not-a-corpus/readme.txt",
                         Body=b"nothing here")
    uri = s3.uri("not-a-corpus")
    proc, seconds = _cli(["run", "--preset", "ci", "--data-root", uri,
                          "--output-dir", str(tmp_path)], s3.env())
    _one_line_failure(proc, seconds, uri)


@pytest.mark.slow
def test_object_store_a_misspelt_pipeline_root_fails_before_any_step(
        s3, tmp_path):
    uri = "s3://moonshine-tset/root"
    proc, seconds = _cli(["run", "--preset", "ci", "--data-root",
                          EMBEDDED_CORPUS, "--output-dir", str(tmp_path),
                          "--pipeline-root", uri], s3.env())
    _one_line_failure(proc, seconds, "--pipeline-root", uri, "does not exist")
    assert not os.path.exists(os.path.join(str(tmp_path), "metadata.sqlite"))
