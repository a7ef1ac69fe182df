"""The compiled Kubeflow pipeline runs.

`compile_kubeflow` (ci preset, a few chapters of the embedded corpus, local
roots) writes the PipelineJob; tests/kfp_launcher.py executes every task of
its PipelineSpec in dependency order, each in its own process, through the
entry points the container runs (TFX's kubeflow_v2_run_executor, the
FileBasedExampleGen driver as the pre-cache-check hook, the Importer in the
launcher itself), each ExecutorInput built from the spec as the KFP launcher
builds it. Every task must succeed and the Pusher's model must transcribe.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from kfp_launcher import Launcher, load_pipeline_spec, topological_order
from gating_runs import tiny_corpus

IMAGE = "registry.example.com/ml/moonshine-tfx:test"  # never pulled here
SCHEMA_FILE = os.path.join(REPO_ROOT, "schemas", "schema.pbtxt")
TASKS = ["ImportSchemaGen", "LibriSpeechExampleGen", "StatisticsGen",
         "ExampleValidator", "Transform", "Trainer", "ModelExporter",
         "Evaluator", "TFLiteEvaluator", "Pusher"]


def _compile(tmp, data_root, **kwargs):
    from pipeline import beam
    from pipeline import kubeflow_runner as kfr
    from pipeline.options import RunOptions

    # Each task runs in its own process on a few chapters: the pods' default
    # (warm worker processes, tests/test_kubeflow_runner.py checks it is
    # compiled in) would start a worker pool per task for seconds of data.
    kwargs.setdefault("beam_args", list(beam.IN_PROCESS_ARGS))

    root = os.path.join(tmp, "pipeline-root")
    path = kfr.compile_kubeflow(
        RunOptions.resolve("ci"), image=IMAGE, pipeline_root=root,
        output=os.path.join(tmp, "pipeline.json"), data_root=data_root,
        resources=kfr.TrainerResources(gpus=0), schema_file=SCHEMA_FILE,
        serving_model_dir=os.path.join(tmp, "serving_model"),
        allow_local_root=True, **kwargs)
    return load_pipeline_spec(path), root


@pytest.fixture(scope="module")
def kfp_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("kfp-exec"))
    data_root = tiny_corpus(os.path.join(tmp, "corpus"))
    spec, root = _compile(tmp, data_root)
    run = Launcher(spec, pipeline_root=root).run()
    print("kubeflow_execution task seconds:", json.dumps(run.timings()))
    return spec, run, data_root


@pytest.mark.slow
def test_kubeflow_execution_every_task_succeeds(kfp_run):
    spec, run, _ = kfp_run
    assert sorted(run.order) == sorted(TASKS)
    assert run.order == topological_order(spec)
    for name in TASKS:
        task = run.tasks[name]
        assert task.kind == "container"
        assert task.steps and all(s.returncode == 0 for s in task.steps), name
        assert task.executor_output is not None, name
        assert os.path.isfile(task.executor_input["outputs"]["outputFile"])
        for key, artifact in task.outputs.items():
            assert os.path.exists(artifact["uri"]), (name, key)
    # The ExampleGen ran its driver (Vertex's pre-cache-check hook) first,
    # and the executor got the span and fingerprint it computed.
    gen = run.tasks["LibriSpeechExampleGen"]
    assert [s.name for s in gen.steps] == ["driver", "executor"]
    params = gen.executor_input["inputs"]["parameterValues"]
    assert "input_fingerprint" in params and params["span"] == 0


@pytest.mark.slow
def test_kubeflow_execution_passes_artifact_metadata_downstream(kfp_run):
    _, run, _ = kfp_run
    examples = run.tasks["LibriSpeechExampleGen"].outputs["examples"]
    assert json.loads(examples["metadata"]["split_names"]) == [
        "train", "eval", "test"]
    # StatisticsGen read the split names from its input artifact's metadata.
    stats_in = run.tasks["StatisticsGen"].executor_input["inputs"][
        "artifacts"]["examples"]["artifacts"][0]
    assert stats_in["metadata"]["split_names"] == \
        examples["metadata"]["split_names"]
    assert stats_in["type"] == {"schemaTitle": "tfx.Examples"}
    stats = run.tasks["StatisticsGen"].outputs["statistics"]
    assert json.loads(stats["metadata"]["split_names"]) == [
        "train", "eval", "test"]
    assert all(os.path.isdir(os.path.join(stats["uri"], f"Split-{s}"))
               for s in ("train", "eval", "test"))


@pytest.mark.slow
def test_kubeflow_execution_ingestion_counts_reconcile(kfp_run):
    _, run, data_root = kfp_run
    examples = run.tasks["LibriSpeechExampleGen"].outputs["examples"]
    with open(os.path.join(examples["uri"], "ingestion_report.json")) as f:
        report = json.load(f)
    flacs = sum(f.endswith(".flac") for _, _, fs in os.walk(data_root)
                for f in fs)
    assert set(report["splits"]) == {"train", "eval", "test"}
    for split, counts in report["splits"].items():
        assert counts["found"] == counts["written"] + counts["quarantined"], \
            split
        assert counts["written"] > 0, split
    assert report["total"]["found"] == flacs
    # The same totals travel on the artifact, through ML Metadata.
    assert examples["metadata"]["ingestion_found"] == flacs


@pytest.mark.slow
def test_kubeflow_execution_evaluator_blesses_and_pusher_pushes(kfp_run):
    _, run, _ = kfp_run
    blessing = run.tasks["Evaluator"].outputs["blessing"]
    blessed = blessing["metadata"].get("blessed") == 1
    marker = "BLESSED" if blessed else "NOT_BLESSED"
    assert os.path.isfile(os.path.join(blessing["uri"], marker))
    print(f"kubeflow_execution: Evaluator blessed={blessed}")
    assert blessed, ("the ci model was not blessed; compile with "
                     "wer_upper_bound=1e6 so that the Pusher pushes")
    pushed = run.tasks["Pusher"].outputs["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1
    destination = pushed["metadata"]["pushed_destination"]
    assert os.path.isfile(os.path.join(destination, "saved_model.pb"))


@pytest.mark.slow
def test_kubeflow_execution_pushed_model_transcribes_a_flac(kfp_run):
    _, run, data_root = kfp_run
    model_dir = run.tasks["Pusher"].outputs["pushed_model"]["metadata"][
        "pushed_destination"]
    flac = next(os.path.join(d, f) for d, _, fs in sorted(os.walk(data_root))
                for f in sorted(fs) if f.endswith(".flac"))
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "transcribe", "--model",
         model_dir, flac],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    from models import config
    text = result.stdout.rstrip("\n")
    assert set(text) <= set(config.CHARACTERS), text


def test_kubeflow_execution_imports_the_baseline_into_the_evaluator(tmp_path):
    """The Importer runs in the launcher (no container) and its artifact
    reaches the Evaluator's ExecutorInput as KFP hands it over."""
    from pipeline import pipeline as pipeline_def

    baseline = str(tmp_path / "releases" / "v1" / "model")
    spec, root = _compile(str(tmp_path), str(tmp_path / "corpus"),
                          baseline_model_uri=baseline)
    importer_id = pipeline_def.BASELINE_IMPORTER_ID
    order = topological_order(spec)
    assert order.index(importer_id) < order.index("Evaluator")
    assert order.index("Trainer") < order.index("ModelExporter") < \
        order.index("Evaluator") < order.index("Pusher")

    launcher = Launcher(spec, pipeline_root=root, run_id="r1")
    (result,) = launcher.run(tasks=[importer_id]).tasks.values()
    assert result.kind == "importer" and not result.steps
    imported = result.outputs["result"]
    assert imported["uri"] == baseline
    assert imported["type"] == {"schemaTitle": "tfx.Model"}
    assert imported["metadata"]["tfx_version"]

    # Stand-ins for the upstream outputs, recorded as a task's would be.
    examples_type = spec["components"]["LibriSpeechExampleGen"][
        "outputDefinitions"]["artifacts"]["examples"]["artifactType"]
    launcher.record_artifact("LibriSpeechExampleGen", "examples", {
        "type": examples_type, "uri": "/x/examples",
        "metadata": {"split_names": '["train", "eval", "test"]',
                     "span": 0.0, "ingestion_report": {"total": {}}}})
    launcher.record_artifact("ModelExporter", "exported_model", {
        "type": {"instanceSchema": "title: tfx.Model\ntype: object\n"},
        "uri": "/x/model", "metadata": {}})
    executor_input = launcher.executor_input("Evaluator")
    inputs = executor_input["inputs"]["artifacts"]
    assert inputs["baseline_model"]["artifacts"][0]["uri"] == baseline
    (examples,) = inputs["examples"]["artifacts"]
    # ML Metadata keeps numbers as doubles and wraps structs (KFP's
    # converter), and the launcher names each artifact by its id.
    assert examples["metadata"]["span"] == 0
    assert examples["metadata"]["ingestion_report"] == {
        "struct": {"total": {}}}
    assert examples["name"] != inputs["model"]["artifacts"][0]["name"]
    outputs = executor_input["outputs"]
    assert outputs["artifacts"]["blessing"]["artifacts"][0]["uri"] == \
        os.path.join(root, "moonshine-tfx", "r1", "Evaluator", "blessing")
    assert outputs["outputFile"] == os.path.join(
        root, "moonshine-tfx", "r1", "Evaluator", "executor_output.json")
    # What TFX's entry point parses: real artifact classes and properties.
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import (
        kubeflow_v2_entrypoint_utils as entrypoint)

    message = json_format.ParseDict(executor_input,
                                    pipeline_spec_pb2.ExecutorInput())
    parsed = entrypoint.parse_raw_artifact_dict(message.inputs.artifacts)
    assert type(parsed["examples"][0]).__name__ == "Examples"
    assert parsed["examples"][0].split_names == '["train", "eval", "test"]'
    assert parsed["baseline_model"][0].uri == baseline


def test_kubeflow_execution_failed_task_is_named_with_its_output(tmp_path):
    """A failing container stops the run with the task's name and its
    output's tail; tasks downstream of it never start."""
    from kfp_launcher import TaskFailed

    def task(name, deps=()):
        return {"taskInfo": {"name": name}, "componentRef": {"name": name},
                "dependentTasks": list(deps)}

    def component(name):
        return {"executorLabel": name + "_executor"}

    def container(code):
        return {"container": {"image": IMAGE, "command": ["python", "-c", code],
                              "args": ["{{$}}"]}}

    write_output = ("import json, os, sys; ei = json.loads(sys.argv[1]); "
                    "f = ei['outputs']['outputFile']; "
                    "open(f, 'w').write('{}')")
    spec = {
        "pipelineInfo": {"name": "p"},
        "root": {"dag": {"tasks": {"a": task("a"), "b": task("b", ["a"]),
                                   "c": task("c", ["b"])}}},
        "components": {n: component(n) for n in "abc"},
        "deploymentSpec": {"executors": {
            "a_executor": container(write_output),
            "b_executor": container(
                "import sys; print('the tail of b'); sys.exit(3)"),
            "c_executor": container(write_output)}},
    }
    launcher = Launcher(spec, pipeline_root=str(tmp_path), run_id="r")
    with pytest.raises(TaskFailed) as failed:
        launcher.run()
    assert failed.value.task == "b" and failed.value.step.returncode == 3
    message = str(failed.value)
    assert "task 'b'" in message and "exited 3" in message
    assert "the tail of b" in message
    assert not os.path.exists(os.path.join(str(tmp_path), "p", "r", "c"))

    # Exit 0 without an ExecutorOutput is a failure too.
    spec["deploymentSpec"]["executors"]["b_executor"] = container("pass")
    with pytest.raises(TaskFailed, match="wrote no ExecutorOutput"):
        Launcher(spec, pipeline_root=str(tmp_path), run_id="r2").run()

    spec["root"]["dag"]["tasks"]["a"]["dependentTasks"] = ["c"]
    with pytest.raises(ValueError, match="cycle"):
        topological_order(spec)
