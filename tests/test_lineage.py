"""`lineage` and `runs` against the real SQLite ML Metadata store of real runs.

The store is the one `gated_runs` (tests/gating_runs.py) writes: run 1 pushed
a ci model, run 2's worse export was refused, run 3 re-ran run 2 from cache,
run 4 re-ran run 1 (blessed, not pushed again), run 5 re-exported run 1's
training with greedy decoding and pushed it (the served model), run 6 was a
broken export, refused.
Checked through the Python API and the CLI (`python -m tools.cli`).
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from gating_runs import BABBLING_EXPORT_FN

pytestmark = pytest.mark.slow


def _metadata(runs):
    return os.path.join(runs["output_dir"], "metadata.sqlite")


def _cli(*args):
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", *args], capture_output=True,
        text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def lineage_json(gated_runs):
    return json.loads(_cli("lineage", "--output-dir", gated_runs["output_dir"],
                           "--json"))


def _walk(node):
    yield node
    for child in node.get("inputs", []):
        yield from _walk(child)


def test_lineage_chain_reaches_the_data(gated_runs, lineage_json):
    chain = lineage_json["chain"]
    summary1, summary5 = gated_runs["summary1"], gated_runs["summary5"]
    # PushedModel: the one run 5 pushed, the latest pushed.
    assert chain["pushed_model"]["destination"] == summary5["pushed_model_dir"]
    # <- serving Model <- ModelExporter (run 5's greedy decoding, real
    # export_fn) <- trained Model <- the Trainer run of run 1, its preset ci.
    assert chain["model"]["uri"] + "/Format-Serving" == (
        summary5["exported_model_dir"])
    exporter = chain["exporter"]
    assert exporter["state"] == "complete"
    assert exporter["decode"]["beam_width"] == 1
    assert exporter["export_fn"] == "models.serving.export_fn" != (
        BABBLING_EXPORT_FN)
    assert chain["trained_model"]["uri"] + "/Format-Serving" == (
        summary1["trained_model_dir"])
    trainer = chain["trainer"]
    assert trainer["state"] == "complete"
    assert trainer["run_fn"] == "models.trainer.run_fn"
    assert trainer["preset"]["name"] == "ci"
    assert trainer["preset"]["train"]["train_steps"] > 0
    # <- Transform graph <- raw Examples <- the data root, with split counts.
    assert chain["transform_graph"]["preprocessing_fn"] == (
        "models.preprocessing.preprocessing_fn")
    examples = chain["examples"]
    assert "LibriSpeechExampleGen" in examples["uri"]
    assert examples["data_root"] == gated_runs["data_root"]
    assert examples["split_counts"] == summary1["examples"]
    assert set(examples["split_counts"]) == {"train", "eval", "test"}
    # The evaluation and blessing of that model (first run: no baseline).
    evaluation = chain["evaluation"]
    # Judged against run 1's model, the latest blessed when run 5 ran.
    assert evaluation["baseline_model"] is not None
    assert evaluation["metrics"]["wer"] == pytest.approx(summary5["wer"])
    assert evaluation["metrics"]["example_count"] == (
        summary1["examples"]["eval"])
    assert evaluation["validation"]["ok"] is True
    assert chain["blessed"] is True


def test_lineage_tree_is_linked_by_events(lineage_json):
    """The full tree: every artifact's producer, down to the ExampleGen."""
    tree = lineage_json["pushed_model"]
    assert tree["type"] == "PushedModel"
    assert tree["produced_by"]["component"] == "Pusher"
    types = {n["type"]: n for n in _walk(tree) if not n.get("see_above")}
    assert {"PushedModel", "Model", "ModelBlessing", "TransformGraph",
            "Examples", "Schema"} <= set(types)
    assert {c["input_key"]: c["type"] for c in tree["inputs"]} == {
        "model": "Model", "model_blessing": "ModelBlessing",
        "tflite_evaluation": "components.TFLiteEvaluation"}
    producers = {n["produced_by"]["component"] for n in _walk(tree)
                 if n.get("produced_by")}
    assert {"Pusher", "ModelExporter", "Trainer", "Evaluator",
            "TFLiteEvaluator", "Transform", "LibriSpeechExampleGen",
            "ImportSchemaGen"} <= producers


def test_lineage_of_the_refused_model_is_not_served(gated_runs):
    """Asking for a PushedModel that was never pushed is an error."""
    from tools import lineage, metadata
    store = metadata.open_store(_metadata(gated_runs))
    unpushed = [a.id for a in store.get_artifacts_by_type("PushedModel")
                if not metadata.custom_property(a, "pushed", 0)]
    assert unpushed
    with pytest.raises(LookupError, match="no pushed model"):
        lineage.lineage(_metadata(gated_runs), unpushed[0])


def test_lineage_text_names_every_link(gated_runs):
    text = _cli("lineage", "--metadata", _metadata(gated_runs))
    for needle in ("served model: " + gated_runs["summary5"]["pushed_model_dir"],
                   "<- ModelExporter execution", '"beam_width": 1',
                   "<- Trainer execution", "preset ci", "<- TransformGraph",
                   "<- Examples", "<- data root " + gated_runs["data_root"],
                   "blessed: True"):
        assert needle in text, needle


def test_runs_lists_each_run(gated_runs):
    from tools import lineage
    rows = lineage.runs(_metadata(gated_runs))
    cli_rows = json.loads(_cli("runs", "--output-dir",
                               gated_runs["output_dir"], "--json"))
    assert [r["run_id"] for r in cli_rows] == [r["run_id"] for r in rows]
    assert len(rows) == 6
    assert [r["status"] for r in rows] == ["complete"] * 6
    assert [(r["blessed"], r["pushed"]) for r in rows] == [
        (True, True), (False, False), (False, False), (True, False),
        (True, True), (False, False)]
    for row, run in zip(rows, range(1, 7)):
        assert row["wer"] == pytest.approx(gated_runs[f"summary{run}"]["wer"])
        # The eval split is one subset here: its WER is the overall one.
        assert {k: v["wer"] for k, v in row["subsets"].items()} == {
            "dev-clean": pytest.approx(row["wer"])}
    run1, run2, run3 = rows[:3]
    assert run2["wer"] > run1["wer"]
    assert run1["cached"] == 0 and run3["cached"] == run3["components"] - 1

    text = _cli("runs", "--output-dir", gated_runs["output_dir"])
    lines = text.strip().splitlines()
    assert len(lines) == 7 and "WER" in lines[0] and "pushed" in lines[0]
    assert "dev-clean" in lines[1]
