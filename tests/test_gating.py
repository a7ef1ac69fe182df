"""Release gating, asserted from the real ML Metadata store of real runs.

`gated_runs` (tests/gating_runs.py) runs the pipeline six times against one
output dir: a ci model (blessed, pushed), a provably worse export of it
(refused by the no-regression check, not pushed), an unchanged re-run (from
the cache, component by component), run 1 again (blessed, not pushed twice),
run 1 with another beam width (re-exported, not re-trained), and a broken
export whose output is one constant text (refused by the output-diversity
gate).
"""

import os

import pytest
from ml_metadata.proto import metadata_store_pb2

from gating_runs import (BABBLE_WORD, BABBLING_EXPORT_FN, CONSTANT_TEXT,
                         PIPELINE_NAME)

Execution = metadata_store_pb2.Execution
Event = metadata_store_pb2.Event

COMPONENTS = ("LibriSpeechExampleGen", "StatisticsGen", "ImportSchemaGen",
              "ExampleValidator", "Transform", "Trainer", "ModelExporter",
              "Evaluator", "Pusher")
RESOLVER = "latest_blessed_model_resolver"


def test_thresholds_are_pipeline_parameters():
    """`run --wer-upper-bound/--cer-upper-bound/--max-wer-regression` reach
    the Evaluator's gate, with the output-diversity gate beside them."""
    from google.protobuf import json_format
    import tensorflow_model_analysis as tfma
    from models import config
    from pipeline import pipeline as pipeline_def
    from tools import cli

    args = cli.build_parser().parse_args(
        ["run", "--wer-upper-bound", "0.4", "--cer-upper-bound", "0.3",
         "--max-wer-regression", "0.02"])
    assert (args.wer_upper_bound, args.max_wer_regression) == (0.4, 0.02)
    assert cli.build_parser().parse_args(["run"]).max_wer_regression == (
        config.MAX_WER_REGRESSION)

    options = cli.options_from_args(args, export_fn=BABBLING_EXPORT_FN)
    p = pipeline_def.create_pipeline(
        options, pipeline_root="/tmp/unused", data_root="/tmp/unused",
        serving_model_dir="/tmp/unused")
    nodes = {c.id: c for c in p.components}
    assert nodes["ModelExporter"].exec_properties["export_fn"] == (
        BABBLING_EXPORT_FN)
    eval_config = nodes["Evaluator"].exec_properties["eval_config"]
    if isinstance(eval_config, str):
        eval_config = json_format.Parse(eval_config, tfma.EvalConfig())
    gates = {m.class_name: m.per_slice_thresholds[0] for spec in
             eval_config.metrics_specs for m in spec.metrics
             if m.per_slice_thresholds}
    assert set(gates) == {"WordErrorRate", "CharacterErrorRate",
                          "OutputDiversity"}
    wer = gates["WordErrorRate"].threshold
    assert wer.value_threshold.upper_bound.value == 0.4
    assert wer.change_threshold.absolute.value == pytest.approx(0.02,
                                                                abs=1e-9)
    assert gates["CharacterErrorRate"].threshold.value_threshold.upper_bound.value == 0.3
    assert gates["OutputDiversity"].threshold.value_threshold.lower_bound.value == (
        config.MIN_OUTPUT_DIVERSITY)
    for gate in gates.values():  # the overall slice only
        assert [list(s.feature_keys) for s in gate.slicing_specs] == [[]]
    assert [list(s.feature_keys) for s in eval_config.slicing_specs] == [
        [], [config.SUBSET_KEY], [config.SPEAKER_ID_KEY],
        [config.DURATION_BUCKET_KEY]]
    assert RESOLVER in nodes  # the baseline: the latest blessed model


def test_every_preset_refuses_an_empty_model():
    """An empty transcript scores WER = CER = 1: above every preset's bounds
    but ci's, whose gate for it is the output diversity (test_metrics)."""
    from models import config
    for name, preset in config.PRESETS.items():
        if name == "ci":
            continue
        assert preset.wer_upper_bound < 1.0 and preset.cer_upper_bound < 1.0


def _store(runs):
    from tools import metadata
    return metadata.open_store(os.path.join(runs["output_dir"],
                                            "metadata.sqlite"))


def _by_run(store):
    """{node id: execution} for each pipeline run, oldest run first."""
    runs = sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: (c.create_time_since_epoch, c.id))
    prefix = PIPELINE_NAME + "."
    node_of = {}
    for context in store.get_contexts_by_type("node"):
        for execution in store.get_executions_by_context(context.id):
            node_of[execution.id] = context.name[len(prefix):]
    return [{node_of[e.id]: e for e in store.get_executions_by_context(c.id)}
            for c in runs]


def _io(store, execution, kind, key):
    """Artifacts of one input/output key of an execution."""
    from tools import metadata
    events = metadata.INPUT_EVENTS if kind == "in" else metadata.OUTPUT_EVENTS
    return metadata.artifacts_by_key(store, execution.id, events).get(key, [])


def _flag(artifact, name):
    from tools import metadata
    return bool(metadata.custom_property(artifact, name, 0))


def _versions(serving_dir):
    return sorted(d for d in os.listdir(serving_dir) if d.isdigit())


def _state(execution):
    return Execution.State.Name(execution.last_known_state)


@pytest.mark.slow
def test_six_runs_in_one_store(gated_runs):
    runs = _by_run(_store(gated_runs))
    assert len(runs) == 6
    for run in runs:
        assert set(COMPONENTS) <= set(run), sorted(run)


@pytest.mark.slow
def test_first_run_is_judged_on_the_absolute_bounds_alone(gated_runs):
    store = _store(gated_runs)
    run1 = _by_run(store)[0]
    evaluator = run1["Evaluator"]
    assert evaluator.last_known_state == Execution.COMPLETE
    assert _io(store, evaluator, "in", "baseline_model") == []
    (blessing,) = _io(store, evaluator, "out", "blessing")
    assert _flag(blessing, "blessed")
    (pushed,) = _io(store, run1["Pusher"], "out", "pushed_model")
    assert _flag(pushed, "pushed")
    summary = gated_runs["summary1"]
    assert summary["blessed"] is True and summary["validation"]["ok"]
    assert summary["pushed_model_dir"] == summary["serving_model_dir"]


@pytest.mark.slow
def test_worse_export_is_refused_by_the_regression_check(gated_runs):
    from tools import metadata
    store = _store(gated_runs)
    run1, run2 = _by_run(store)[:2]
    # The export is not training: run 2's Trainer is run 1's, cached.
    assert _state(run2["Trainer"]) == "CACHED"
    (model1,) = _io(store, run1["ModelExporter"], "out", "exported_model")
    (model2,) = _io(store, run2["ModelExporter"], "out", "exported_model")
    assert model2.id != model1.id
    assert metadata.custom_property(run2["ModelExporter"], "export_fn") == (
        BABBLING_EXPORT_FN)

    # The Resolver handed run 1's blessed model to the Evaluator as baseline.
    evaluator = run2["Evaluator"]
    (baseline,) = _io(store, evaluator, "in", "baseline_model")
    assert baseline.id == model1.id
    (blessing,) = _io(store, evaluator, "out", "blessing")
    assert not _flag(blessing, "blessed")

    # Worse by measurement, refused by the change threshold alone (the
    # absolute bounds were lifted for this run).
    (evaluation,) = _io(store, evaluator, "out", "evaluation")
    wer = metadata.evaluation_metrics(evaluation.uri)
    assert wer["wer_diff"] > 0
    assert wer["wer"] > gated_runs["summary1"]["wer"]
    validation = metadata.evaluation_validation(evaluation.uri)
    assert not validation["ok"]
    assert validation["failures"] and all(
        f["metric"] == "wer" and f["is_diff"] for f in validation["failures"])


@pytest.mark.slow
def test_worse_model_is_not_pushed_and_the_old_one_keeps_serving(gated_runs):
    store = _store(gated_runs)
    run1, run2 = _by_run(store)[:2]
    (pushed1,) = _io(store, run1["Pusher"], "out", "pushed_model")
    (pushed2,) = _io(store, run2["Pusher"], "out", "pushed_model")
    assert not _flag(pushed2, "pushed")

    summary2 = gated_runs["summary2"]
    destination = gated_runs["summary1"]["pushed_model_dir"]
    assert summary2["blessed"] is False and summary2["pushed"] is False
    assert summary2["pushed_model_dir"] is None
    assert summary2["serving_model_dir"] == destination

    # The served model is run 1's: it does not babble.
    from tools import transcribe
    from tools.summary import evaluate_split
    model, _ = transcribe.load_saved_model(destination)
    decoded = evaluate_split(gated_runs["summary1"]["examples_uri"], "eval",
                             model, limit=2)
    assert all(BABBLE_WORD not in s["hypothesis"].split()
               for s in decoded["samples"])
    assert all(BABBLE_WORD in s["hypothesis"].split()
               for s in summary2["eval_samples"])


@pytest.mark.slow
def test_unchanged_rerun_hits_the_cache_for_every_component(gated_runs):
    run3 = _by_run(_store(gated_runs))[2]
    states = {node: _state(e) for node, e in run3.items()
              if node in COMPONENTS}
    assert states == {node: "CACHED" for node in COMPONENTS}
    # The Resolver is no component: it re-resolves the latest blessed model
    # on every run (still run 1's).
    assert run3[RESOLVER].last_known_state in (Execution.COMPLETE,
                                               Execution.CACHED)
    assert gated_runs["summary3"]["serving_model_dir"] == (
        gated_runs["summary1"]["pushed_model_dir"])


@pytest.mark.slow
def test_rerunning_the_served_pipeline_pushes_no_second_version(gated_runs):
    store = _store(gated_runs)
    run1, run4 = _by_run(store)[0], _by_run(store)[3]
    assert _state(run4["Trainer"]) == _state(run4["ModelExporter"]) == "CACHED"
    # The Evaluator ran again, against the model itself as its baseline,
    # and blessed it; the Pusher saw it already serving.
    (candidate,) = _io(store, run4["Evaluator"], "in", "model")
    (baseline,) = _io(store, run4["Evaluator"], "in", "baseline_model")
    (model1,) = _io(store, run1["ModelExporter"], "out", "exported_model")
    assert candidate.id == baseline.id == model1.id
    (blessing,) = _io(store, run4["Evaluator"], "out", "blessing")
    assert _flag(blessing, "blessed")
    assert _state(run4["Pusher"]) == "COMPLETE"
    (pushed,) = _io(store, run4["Pusher"], "out", "pushed_model")
    assert not _flag(pushed, "pushed")
    destination = gated_runs["summary1"]["pushed_model_dir"]
    summary4 = gated_runs["summary4"]
    assert summary4["blessed"] is True and summary4["pushed"] is False
    assert summary4["already_serving"] == destination
    assert summary4["serving_model_dir"] == destination


@pytest.mark.slow
def test_a_new_beam_width_re_exports_without_training_again(gated_runs):
    import json
    from tools import metadata
    store = _store(gated_runs)
    run5 = _by_run(store)[4]
    assert _state(run5["Trainer"]) == "CACHED"
    assert _state(run5["ModelExporter"]) == "COMPLETE"
    assert _state(run5["Evaluator"]) == "COMPLETE"
    decode = metadata.custom_property(run5["ModelExporter"], "decode")
    decode = json.loads(decode) if isinstance(decode, str) else decode
    assert decode["beam_width"] == 1
    (exported,) = _io(store, run5["ModelExporter"], "out", "exported_model")
    with open(os.path.join(exported.uri, "Format-Serving",
                           "moonshine_preset.json")) as f:
        assert json.load(f)["decode"]["beam_width"] == 1
    # Blessed (its gate was lifted) and pushed: a new version, the same
    # training.
    summary5 = gated_runs["summary5"]
    assert summary5["pushed"] is True
    assert summary5["trained_model_dir"] == (
        gated_runs["summary1"]["trained_model_dir"])
    assert summary5["pushed_model_dir"] != gated_runs["summary1"][
        "pushed_model_dir"]


@pytest.mark.slow
def test_a_model_whose_output_ignores_its_input_is_not_blessed(gated_runs):
    """Constant output: refused by the output-diversity gate even with the
    error-rate bounds and the regression margin lifted."""
    summary = gated_runs["summary6"]
    assert summary["blessed"] is False and summary["pushed"] is False
    failures = summary["validation"]["failures"]
    assert [f["metric"] for f in failures] == ["output_diversity"]
    assert {s["hypothesis"] for s in summary["eval_samples"]} == {CONSTANT_TEXT}
    assert summary["eval_metrics"]["output_diversity"] < 0.5
    serving_dir = os.path.join(gated_runs["output_dir"], "serving_model")
    assert summary["serving_model_dir"] in (
        os.path.join(serving_dir, v) for v in _versions(serving_dir))
