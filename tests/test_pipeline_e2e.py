"""The whole pipeline under LocalDagRunner on the ci preset and a subset.

Run 1 of the shared runs (tests/gating_runs.py) is a plain `moonshine-tfx
run --preset ci` through the user-facing CLI; these tests check its ML
Metadata, its summary and its pushed SavedModel. (The same runs prove the
gate refuses worse, empty and constant-output models: tests/test_gating.py.)
"""

import os
import subprocess
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2

from conftest import REPO_ROOT

PIPELINE_NODES = ("LibriSpeechExampleGen", "StatisticsGen", "ImportSchemaGen",
                  "ExampleValidator", "Transform", "Trainer", "ModelExporter",
                  "latest_blessed_model_resolver", "Evaluator", "TFLiteEvaluator",
                  "Pusher")
DONE = (metadata_store_pb2.Execution.COMPLETE,
        metadata_store_pb2.Execution.CACHED)


@pytest.mark.slow
def test_every_component_executed(gated_runs):
    from tools import metadata
    store = metadata.open_store(os.path.join(gated_runs["output_dir"],
                                             "metadata.sqlite"))
    executions = metadata.component_executions(store, "moonshine-tfx")
    for node in PIPELINE_NODES:
        assert executions.get(node), f"{node} never executed"
        assert executions[node][0].last_known_state in DONE, node


@pytest.mark.slow
def test_summary_reports_the_run(gated_runs):
    data_root, summary = gated_runs["data_root"], gated_runs["summary1"]
    for key in ("examples", "wer", "cer", "blessed", "pushed_model_dir",
                "metadata_path", "wall_seconds", "eval_subsets", "test"):
        assert key in summary, key
    n_files = {split: 0 for split in ("train", "eval", "test")}
    prefix_to_split = {"train": "train", "dev": "eval", "test": "test"}
    subsets = {}
    for dirpath, _, files in os.walk(data_root):
        flacs = sum(f.endswith(".flac") for f in files)
        if flacs:
            subset = os.path.relpath(dirpath, data_root).split(os.sep)[0]
            n_files[prefix_to_split[subset.split("-")[0]]] += flacs
            subsets[subset] = subsets.get(subset, 0) + flacs
    assert summary["examples"] == n_files
    assert summary["blessed"] is True
    assert os.path.isfile(os.path.join(summary["pushed_model_dir"],
                                       "saved_model.pb"))
    # The eval rates are TFMA's over every eval utterance; what blessed the
    # model is within the ci preset's bounds and above its diversity floor.
    from models import config
    metrics = summary["eval_metrics"]
    assert metrics["example_count"] == n_files["eval"]
    assert 0 < summary["wer"] <= config.get_preset("ci").wer_upper_bound
    assert 0 < summary["cer"] <= config.get_preset("ci").cer_upper_bound
    assert metrics["output_diversity"] >= config.MIN_OUTPUT_DIVERSITY
    # Test WER/CER per subset: every test subset of the data, with its
    # utterances, and the overall rates among them.
    test = summary["test"]
    test_subsets = {k: v for k, v in subsets.items() if k.startswith("test")}
    assert {k: v["examples"] for k, v in test["subsets"].items()} == (
        test_subsets)
    rates = [v["wer"] for v in test["subsets"].values()]
    assert min(rates) <= test["wer"] <= max(rates)
    assert set(summary["eval_subsets"]) == {
        k for k in subsets if k.startswith("dev")}
    # The embedded corpus is synthetic: the summary says what that means.
    assert "synthetic" in summary["note"]


@pytest.mark.slow
def test_run_prints_one_line_per_component(gated_runs):
    lines = gated_runs["run1_stdout"].splitlines()
    for node in PIPELINE_NODES:
        started = [l for l in lines if l.split()[:2] == [node, "started"]]
        ended = [l for l in lines if l.split()[:1] == [node]
                 and ("done in" in l or "cached" in l)]
        assert len(started) == 1 and len(ended) == 1, (node, lines[:40])
    ingest = next(l for l in lines if l.startswith("  LibriSpeechExampleGen")
                  and "done in" in l)
    assert "examples written" in ingest and "quarantined" in ingest
    evaluate = next(l for l in lines if l.startswith("  Evaluator")
                    and "done in" in l)
    assert "eval WER" in evaluate and "blessed: True" in evaluate
    # Nothing of the libraries' INFO/WARNING logging.
    assert not [l for l in lines if l.startswith(("INFO:", "WARNING:", "I1",
                                                  "W1"))]


@pytest.mark.slow
def test_pushed_model_transcribes_a_flac(gated_runs):
    data_root = gated_runs["data_root"]
    flac = next(os.path.join(d, f) for d, _, fs in sorted(os.walk(data_root))
                for f in sorted(fs) if f.endswith(".flac"))
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "transcribe", "--model",
         os.path.join(gated_runs["output_dir"], "serving_model"), flac],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout.rstrip("\n")
    assert "Traceback" not in result.stderr
    # Decoded text is made of the character vocabulary and nothing else.
    from models import config
    assert set(text) <= set(config.CHARACTERS), text


@pytest.mark.slow
def test_tflite_variants_are_scored_and_gated(gated_runs):
    """The TFLiteEvaluator scores every eval utterance with the SavedModel
    and each TFLite file alike; the Pusher ships the files within tolerance
    and records it; summary, console line and report show the figures."""
    from models import config
    summary = gated_runs["summary1"]
    tflite = summary["tflite"]
    variants = tflite["variants"]
    assert tflite["split"] == "eval"
    assert set(variants) == {config.SAVED_MODEL_VARIANT, *config.TFLITE_FILES}
    n_eval = summary["eval_metrics"]["example_count"]
    for name, v in variants.items():
        assert v["examples"] == n_eval, name
        assert v["bytes"] > 0 and v["ms_per_token"] > 0 and v["tokens"] > 0
        assert v["tokens_per_audio_second"] == pytest.approx(
            v["tokens"] / v["audio_seconds"], rel=1e-3)
    # The SavedModel decoded here scores as TFMA scored it.
    assert abs(variants[config.SAVED_MODEL_VARIANT]["wer"]
               - summary["wer"]) < 1e-6
    assert variants["int8"]["bytes"] < variants["float32"]["bytes"]
    pushed_dir = summary["pushed_model_dir"]
    for variant, name in config.TFLITE_FILES.items():
        v = variants[variant]
        assert v["within_tolerance"] == (
            v["wer"] - variants[config.SAVED_MODEL_VARIANT]["wer"]
            <= config.TFLITE_MAX_WER_INCREASE[variant] + 1e-12)
        assert v["pushed"] == v["within_tolerance"]
        assert os.path.exists(os.path.join(pushed_dir, name)) == v["pushed"]
    line = next(l for l in gated_runs["run1_stdout"].splitlines()
                if l.startswith("  TFLiteEvaluator") and "done in" in l)
    assert "int8 WER" in line
    with open(summary["report"]) as f:
        assert "On-device variants" in f.read()
