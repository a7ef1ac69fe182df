"""The whole pipeline under LocalDagRunner on a tiny preset and subset.

Runs through the user-facing CLI (`moonshine-tfx run`), then checks ML
Metadata, the summary and the pushed SavedModel.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2

from conftest import EMBEDDED_CORPUS, REPO_ROOT

PIPELINE_NODES = ("LibriSpeechExampleGen", "StatisticsGen", "ImportSchemaGen",
                  "ExampleValidator", "Transform", "Trainer",
                  "latest_blessed_model_resolver", "Evaluator", "Pusher")
DONE = (metadata_store_pb2.Execution.COMPLETE,
        metadata_store_pb2.Execution.CACHED)


def _tiny_corpus(dest, per_subset_speakers=2, per_speaker_chapters=1):
    """A few whole chapters of each embedded subset, layout untouched."""
    for subset in sorted(os.listdir(EMBEDDED_CORPUS)):
        src_subset = os.path.join(EMBEDDED_CORPUS, subset)
        if not os.path.isdir(src_subset):
            continue
        for speaker in sorted(os.listdir(src_subset))[:per_subset_speakers]:
            for chapter in sorted(os.listdir(
                    os.path.join(src_subset, speaker)))[:per_speaker_chapters]:
                shutil.copytree(os.path.join(src_subset, speaker, chapter),
                                os.path.join(dest, subset, speaker, chapter))
    return dest


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    data_root = _tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    output_dir = str(tmp_path_factory.mktemp("run"))
    from pipeline import cli
    assert cli.main(["run", "--preset", "ci", "--data-root", data_root,
                     "--output-dir", output_dir]) == 0
    return data_root, output_dir


@pytest.mark.slow
def test_every_component_executed(pipeline_run):
    from pipeline import metadata
    _, output_dir = pipeline_run
    store = metadata.open_store(os.path.join(output_dir, "metadata.sqlite"))
    executions = metadata.component_executions(store, "moonshine-tfx")
    for node in PIPELINE_NODES:
        assert executions.get(node), f"{node} never executed"
        assert executions[node][-1].last_known_state in DONE, node


@pytest.mark.slow
def test_summary_reports_the_run(pipeline_run):
    data_root, output_dir = pipeline_run
    with open(os.path.join(output_dir, "summary.json")) as f:
        summary = json.load(f)
    for key in ("examples", "wer", "cer", "blessed", "pushed_model_dir",
                "metadata_path", "wall_seconds"):
        assert key in summary, key
    n_files = {split: 0 for split in ("train", "eval", "test")}
    prefix_to_split = {"train": "train", "dev": "eval", "test": "test"}
    for dirpath, _, files in os.walk(data_root):
        flacs = sum(f.endswith(".flac") for f in files)
        if flacs:
            subset = os.path.relpath(dirpath, data_root).split(os.sep)[0]
            n_files[prefix_to_split[subset.split("-")[0]]] += flacs
    assert summary["examples"] == n_files
    assert summary["blessed"] is True
    assert os.path.isfile(os.path.join(summary["pushed_model_dir"],
                                       "saved_model.pb"))
    assert summary["wer"] is not None and summary["wer"] >= 0


@pytest.mark.slow
def test_pushed_model_transcribes_a_flac(pipeline_run):
    data_root, output_dir = pipeline_run
    flac = next(os.path.join(d, f) for d, _, fs in sorted(os.walk(data_root))
                for f in sorted(fs) if f.endswith(".flac"))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "transcribe", "--model",
         os.path.join(output_dir, "serving_model"), flac],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout.rstrip("\n")
    assert "Traceback" not in result.stderr
    # Decoded text is made of the character vocabulary and nothing else.
    from models import config
    assert set(text) <= set(config.CHARACTERS), text
