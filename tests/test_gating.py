"""Release gating, asserted from the real ML Metadata store of real runs.

`gated_runs` (tests/gating_runs.py) runs the pipeline three times against one
output dir: a ci model (blessed, pushed), a provably worse one (must be
refused by the no-regression check and not pushed), and an unchanged re-run
(must come from the cache, component by component).
"""

import os

import pytest
from ml_metadata.proto import metadata_store_pb2

from gating_runs import BABBLE_WORD, BABBLING_RUN_FN, PIPELINE_NAME

Execution = metadata_store_pb2.Execution
Event = metadata_store_pb2.Event

COMPONENTS = ("LibriSpeechExampleGen", "StatisticsGen", "ImportSchemaGen",
              "ExampleValidator", "Transform", "Trainer", "Evaluator",
              "Pusher")
RESOLVER = "latest_blessed_model_resolver"


def test_thresholds_are_pipeline_parameters():
    """`run --wer-upper-bound/--max-wer-regression` reach the Evaluator's gate."""
    from google.protobuf import json_format
    import tensorflow_model_analysis as tfma
    from models import config
    from pipeline import cli
    from pipeline import pipeline as pipeline_def

    args = cli.build_parser().parse_args(
        ["run", "--wer-upper-bound", "0.4", "--max-wer-regression", "0.02"])
    assert (args.wer_upper_bound, args.max_wer_regression) == (0.4, 0.02)
    assert cli.build_parser().parse_args(["run"]).max_wer_regression == (
        config.MAX_WER_REGRESSION)

    p = pipeline_def.create_pipeline(
        pipeline_name="p", pipeline_root="/tmp/unused", data_root="/tmp/unused",
        serving_model_dir="/tmp/unused", preset=config.get_preset("ci"),
        wer_upper_bound=args.wer_upper_bound,
        max_wer_regression=args.max_wer_regression, run_fn=BABBLING_RUN_FN)
    nodes = {c.id: c for c in p.components}
    assert nodes["Trainer"].exec_properties["run_fn"] == BABBLING_RUN_FN
    eval_config = nodes["Evaluator"].exec_properties["eval_config"]
    if isinstance(eval_config, str):
        eval_config = json_format.Parse(eval_config, tfma.EvalConfig())
    (wer,) = [m for spec in eval_config.metrics_specs for m in spec.metrics
              if m.class_name == "WordErrorRate"]
    (gate,) = wer.per_slice_thresholds
    assert gate.threshold.value_threshold.upper_bound.value == 0.4
    assert gate.threshold.change_threshold.absolute.value == pytest.approx(
        0.02, abs=1e-9)
    assert [list(s.feature_keys) for s in eval_config.slicing_specs] == [
        [], [config.SPEAKER_ID_KEY], [config.DURATION_BUCKET_KEY]]
    assert RESOLVER in nodes  # the baseline: the latest blessed model


def _store(runs):
    from pipeline import metadata
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
    types = ((Event.INPUT, Event.DECLARED_INPUT) if kind == "in"
             else (Event.OUTPUT, Event.DECLARED_OUTPUT))
    ids = [e.artifact_id for e in store.get_events_by_execution_ids(
        [execution.id]) if e.type in types
        and any(s.key == key for s in e.path.steps)]
    return store.get_artifacts_by_id(ids) if ids else []


def _flag(artifact, name):
    from pipeline import metadata
    return bool(metadata.custom_property(artifact, name, 0))


def _versions(serving_dir):
    return sorted(d for d in os.listdir(serving_dir) if d.isdigit())


@pytest.mark.slow
def test_three_runs_in_one_store(gated_runs):
    runs = _by_run(_store(gated_runs))
    assert len(runs) == 3
    for run in runs:
        assert set(COMPONENTS) <= set(run), sorted(run)


@pytest.mark.slow
def test_first_run_is_judged_on_the_absolute_bound_alone(gated_runs):
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
def test_worse_model_is_refused_by_the_regression_check(gated_runs):
    store = _store(gated_runs)
    run1, run2, _ = _by_run(store)
    (model1,) = _io(store, run1["Trainer"], "out", "model")
    (model2,) = _io(store, run2["Trainer"], "out", "model")
    assert model2.id != model1.id
    assert run2["Trainer"].last_known_state == Execution.COMPLETE
    from pipeline import metadata
    assert metadata.custom_property(run2["Trainer"], "run_fn") == (
        BABBLING_RUN_FN)

    # The Resolver handed run 1's blessed model to the Evaluator as baseline.
    evaluator = run2["Evaluator"]
    (baseline,) = _io(store, evaluator, "in", "baseline_model")
    assert baseline.id == model1.id
    (blessing,) = _io(store, evaluator, "out", "blessing")
    assert not _flag(blessing, "blessed")

    # Worse by measurement, refused by the change threshold alone (the
    # absolute bound was lifted for this run).
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
    run1, run2, _ = _by_run(store)
    (pushed1,) = _io(store, run1["Pusher"], "out", "pushed_model")
    (pushed2,) = _io(store, run2["Pusher"], "out", "pushed_model")
    assert not _flag(pushed2, "pushed")

    from pipeline import lineage
    served = lineage.lineage(os.path.join(gated_runs["output_dir"],
                                          "metadata.sqlite"))
    assert served["chain"]["pushed_model"]["id"] == pushed1.id

    serving_dir = os.path.join(gated_runs["output_dir"], "serving_model")
    destination = gated_runs["summary1"]["pushed_model_dir"]
    assert _versions(serving_dir) == [os.path.basename(destination)]
    summary2 = gated_runs["summary2"]
    assert summary2["blessed"] is False and summary2["pushed"] is False
    assert summary2["pushed_model_dir"] is None
    assert summary2["serving_model_dir"] == destination

    # The served model is run 1's: it does not babble.
    from pipeline.summary import evaluate_split
    examples = lineage.lineage(os.path.join(
        gated_runs["output_dir"], "metadata.sqlite"))["chain"]["examples"]
    decoded = evaluate_split(serving_dir, examples["uri"], "eval", limit=2)
    assert all(BABBLE_WORD not in s["hypothesis"].split()
               for s in decoded["samples"])
    assert all(BABBLE_WORD in s["hypothesis"].split()
               for s in summary2["eval_samples"])


@pytest.mark.slow
def test_unchanged_rerun_hits_the_cache_for_every_component(gated_runs):
    run3 = _by_run(_store(gated_runs))[2]
    states = {node: Execution.State.Name(e.last_known_state)
              for node, e in run3.items() if node in COMPONENTS}
    assert states == {node: "CACHED" for node in COMPONENTS}
    # The Resolver is no component: it re-resolves the latest blessed model
    # on every run (still run 1's).
    assert run3[RESOLVER].last_known_state in (Execution.COMPLETE,
                                               Execution.CACHED)
    assert gated_runs["summary3"]["serving_model_dir"] == (
        gated_runs["summary1"]["pushed_model_dir"])
