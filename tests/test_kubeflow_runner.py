"""The Kubeflow (KFP v2 / Vertex AI) compilation of create_pipeline.

Everything is asserted from the compiled JSON/YAML, as KFP reads it.
"""

import json
import os

import pytest

from models import config
from pipeline import beam
from pipeline import kubeflow_runner as kfr
from pipeline import options as run_options
from pipeline import tfjob
from tools import cli

IMAGE = "registry.example.com/ml/moonshine-tfx:0.1.0"
ROOT = "gs://moonshine-bucket/pipeline-root"
BASELINE = "gs://moonshine-bucket/releases/v1/ModelExporter/exported_model"
DATA_COMPONENTS = ("LibriSpeechExampleGen", "StatisticsGen", "Transform",
                   "Evaluator")
COMPONENTS = {"LibriSpeechExampleGen", "StatisticsGen", "ImportSchemaGen",
              "ExampleValidator", "Transform", "Trainer", "ModelExporter",
              "Evaluator", "TFLiteEvaluator", "Pusher"}


class Spec:
    """Lookups into a compiled PipelineJob dict."""

    def __init__(self, job):
        self.job = job
        self.spec = job["pipelineSpec"]
        self.tasks = self.spec["root"]["dag"]["tasks"]
        self.executors = self.spec["deploymentSpec"]["executors"]

    def executor(self, task):
        ref = self.tasks[task]["componentRef"]["name"]
        label = self.spec["components"][ref]["executorLabel"]
        return self.executors[label]

    def container(self, task):
        return self.executor(task)["container"]

    def param(self, task, name):
        return self.tasks[task]["inputs"]["parameters"][name][
            "runtimeValue"]["constant"]


def _compile(tmp_path, name="pipeline.json", options=None, gpus=1,
             trainer_cpu=kfr.DEFAULT_TRAINER_CPU,
             trainer_memory=kfr.DEFAULT_TRAINER_MEMORY, **kwargs):
    """compile_kubeflow with the default options (tiny) and resources."""
    kwargs.setdefault("image", IMAGE)
    kwargs.setdefault("pipeline_root", ROOT)
    path = kfr.compile_kubeflow(
        options or run_options.RunOptions.resolve(kfr.DEFAULT_PRESET),
        output=str(tmp_path / name), resources=kfr.TrainerResources(
            gpus=gpus, cpu=trainer_cpu, memory=trainer_memory), **kwargs)
    assert path == str(tmp_path / name)
    with open(path) as f:
        return Spec(json.load(f))


@pytest.fixture(scope="module")
def default_spec(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("kfp"))


@pytest.fixture(scope="module")
def baseline_spec(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("kfp"), gpus=2, trainer_cpu="6",
                    trainer_memory="30Gi", baseline_model_uri=BASELINE,
                    beam_args=["--runner=FlinkRunner",
                               "--flink_master=flink:8081",
                               "--environment_type=EXTERNAL"])


def test_every_component_runs_the_image(default_spec):
    assert set(default_spec.tasks) == COMPONENTS
    for task in COMPONENTS:
        container = default_spec.container(task)
        assert container["image"] == IMAGE, task
        assert container["command"] == [
            "python", "-m",
            "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
    # The ExampleGen driver runs in the same image, as a pre-cache hook.
    hook = default_spec.container("LibriSpeechExampleGen")["lifecycle"][
        "preCacheCheck"]
    assert hook["command"][-1].endswith("file_based_example_gen.driver")


def test_trainer_requests_gpu_cpu_and_memory(default_spec, baseline_spec):
    resources = default_spec.container("Trainer")["resources"]
    assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "1"}
    assert resources["cpuLimit"] == 8.0
    assert resources["memoryLimit"] == 32.0  # GB, KFP's unit

    resources = baseline_spec.container("Trainer")["resources"]
    assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "2"}
    assert resources["cpuLimit"] == 6.0
    assert resources["memoryLimit"] == pytest.approx(30 * 2**30 / 1e9)

    for task in COMPONENTS - {"Trainer"}:
        assert "resources" not in default_spec.container(task), task


def test_data_components_get_beam_args(default_spec, baseline_spec):
    default = list(beam.DEFAULT_KUBEFLOW_ARGS)
    # Every core of the pod, workers forked warm (pipeline/beam_pool.py);
    # each worker process registers the run's filesystems first
    # (pipeline/beam_worker.py); no TFX sdist built for every step.
    assert default == ["--runner=pipeline.beam_pool.LocalRunner",
                       "--direct_running_mode=multi_processing",
                       "--direct_num_workers=0",
                       "--beam_plugin=pipeline.beam_worker",
                       "--sdk_container_image=local"]
    for task in DATA_COMPONENTS:
        args = default_spec.container(task)["args"]
        assert args[-len(default):] == default, task
    hook = default_spec.container("LibriSpeechExampleGen")["lifecycle"][
        "preCacheCheck"]
    assert hook["args"][-len(default):] == default

    flink = ["--runner=FlinkRunner", "--flink_master=flink:8081",
             "--environment_type=EXTERNAL"]
    for task in DATA_COMPONENTS:
        args = baseline_spec.container(task)["args"]
        assert args[-len(flink):] == flink, task
        assert not set(default) & set(args), task  # replaced, not appended


def test_pipeline_root_and_paths_inside_the_image(default_spec):
    assert default_spec.job["runtimeConfig"]["gcsOutputDirectory"] == ROOT
    assert default_spec.spec["defaultPipelineRoot"] == ROOT
    assert default_spec.spec["pipelineInfo"]["name"] == "moonshine-tfx"
    assert default_spec.param("ImportSchemaGen", "schema_file") == \
        kfr.IMAGE_SCHEMA_FILE
    assert default_spec.param("LibriSpeechExampleGen", "input_base") == \
        kfr.IMAGE_EMBEDDED_CORPUS
    push = json.loads(default_spec.param("Pusher", "push_destination"))
    assert push["filesystem"]["base_directory"] == \
        ROOT + "/moonshine-tfx/serving_model"


def test_code_is_referenced_by_dotted_path(default_spec):
    assert default_spec.param("Transform", "preprocessing_fn") == \
        run_options.PREPROCESSING_FN
    assert default_spec.param("Trainer", "run_fn") == run_options.RUN_FN
    assert default_spec.param("ModelExporter", "export_fn") == \
        run_options.EXPORT_FN
    params = json.dumps(default_spec.spec)
    assert "module_file" not in params and "module_path" not in params


def test_no_resolver_is_emitted(default_spec, baseline_spec):
    from pipeline import pipeline as pipeline_def

    for spec in (default_spec, baseline_spec):
        text = json.dumps(spec.job)
        assert pipeline_def.RESOLVER_ID not in text
        assert "resolver" not in text.lower()
        for executor in spec.executors.values():
            assert set(executor) <= {"container", "importer"}
    # Without a baseline the Evaluator gates on the absolute WER bound only.
    assert "baseline_model" not in \
        default_spec.tasks["Evaluator"]["inputs"]["artifacts"]


def test_baseline_model_is_imported_into_the_evaluator(baseline_spec):
    from pipeline import pipeline as pipeline_def

    importer_id = pipeline_def.BASELINE_IMPORTER_ID
    assert importer_id == "baseline_model_importer"
    assert set(baseline_spec.tasks) == COMPONENTS | {importer_id}
    importer = baseline_spec.executor(importer_id)["importer"]
    assert importer["artifactUri"]["constant"] == BASELINE
    assert importer["typeSchema"]["instanceSchema"].startswith(
        "title: tfx.Model")
    evaluator = baseline_spec.tasks["Evaluator"]
    assert evaluator["inputs"]["artifacts"]["baseline_model"] == {
        "taskOutputArtifact": {"producerTask": importer_id,
                               "outputArtifactKey": "result"}}
    assert importer_id in evaluator["dependentTasks"]


def test_json_is_a_pipeline_job_and_yaml_a_pipeline_spec(default_spec,
                                                         tmp_path):
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    job = json_format.ParseDict(default_spec.job,
                                pipeline_spec_pb2.PipelineJob())
    assert job.pipeline_spec["schemaVersion"] == "2.1.0"

    # The YAML is what the open-source KFP UI / `kfp` client upload.
    path = kfr.compile_kubeflow(
        run_options.RunOptions.resolve(kfr.DEFAULT_PRESET), image=IMAGE,
        pipeline_root=ROOT, output=str(tmp_path / "sub" / "p.yaml"))
    pipeline = components.load_component_from_file(path)
    assert pipeline.pipeline_spec.default_pipeline_root == ROOT
    assert set(pipeline.pipeline_spec.root.dag.tasks) == COMPONENTS


@pytest.mark.parametrize("root", [
    "minio://mlpipeline/v2/artifacts", "/tmp/pipeline_root", "pipeline_root",
    "hdfs://namenode/root", "file:///tmp/root"])
def test_bad_pipeline_root_is_rejected(root, tmp_path):
    with pytest.raises(kfr.KubeflowConfigError, match="gs:// or s3://"):
        _compile(tmp_path, name="p.json", pipeline_root=root)
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"data_root": "data/LibriSpeech"}, "--data-root"),
    ({"serving_model_dir": "/serving"}, "--serving-model-dir"),
    ({"baseline_model_uri": "/models/v1"}, "--baseline-model"),
    ({"trainer_memory": "lots"}, "--trainer-memory"),
    ({"trainer_cpu": "-1"}, "--trainer-cpu"),
    ({"gpus": -1}, "--gpus"),
    ({"image": ""}, "--image"),
])
def test_bad_options_are_rejected(kwargs, match, tmp_path):
    with pytest.raises(kfr.KubeflowConfigError, match=match):
        _compile(tmp_path, name="p.json", **kwargs)
    assert not (tmp_path / "p.json").exists()


def test_quantities():
    assert kfr.parse_memory_gb("32G") == 32.0
    assert kfr.parse_memory_gb("64") == 64.0
    assert kfr.parse_memory_gb("512M") == pytest.approx(0.512)
    assert kfr.parse_memory_gb("16Gi") == pytest.approx(17.179869184)
    assert kfr.parse_cpu("8") == 8.0
    assert kfr.parse_cpu("500m") == 0.5
    spec = kfr.TrainerResources(gpus=0).resource_spec()
    assert not spec.HasField("accelerator") and spec.cpu_limit == 8.0


def test_resolver_and_baseline_uri_are_exclusive():
    from pipeline import pipeline as pipeline_def

    with pytest.raises(ValueError, match="use_resolver=False"):
        pipeline_def.create_pipeline(
            run_options.RunOptions.resolve("ci"), pipeline_root=ROOT,
            data_root="/data", serving_model_dir=ROOT + "/serving",
            use_resolver=True, baseline_model_uri=BASELINE)


def test_cli_compiles(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    rc = cli.main(["compile-kubeflow", "--image", IMAGE, "--pipeline-root",
                   ROOT, "--output", str(out), "--data-root",
                   "gs://moonshine-bucket/LibriSpeech", "--preset", "tiny",
                   "--gpus", "4", "--trainer-cpu", "16", "--trainer-memory",
                   "64G", "--beam-arg=--direct_num_workers=4",
                   "--baseline-model", BASELINE, "--split",
                   "train=train-clean-100"])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    spec = Spec(json.loads(out.read_text()))
    resources = spec.container("Trainer")["resources"]
    assert resources["accelerator"]["count"] == "4"
    assert (resources["cpuLimit"], resources["memoryLimit"]) == (16.0, 64.0)
    assert spec.container("Transform")["args"][-1] == "--direct_num_workers=4"
    assert spec.param("LibriSpeechExampleGen", "input_base") == \
        "gs://moonshine-bucket/LibriSpeech"
    assert "baseline_model_importer" in spec.tasks
    trainer_config = json.loads(spec.param("Trainer", "custom_config"))
    assert trainer_config["preset"]["name"] == "tiny"


def test_max_wer_regression_reaches_the_evaluator_gate(tmp_path, capsys):
    """`compile-kubeflow --max-wer-regression` is the Evaluator's change
    threshold against the imported baseline (as `run --max-wer-regression`
    is against the latest blessed model)."""
    from google.protobuf import json_format
    import tensorflow_model_analysis as tfma

    def gate(spec):
        eval_config = json_format.Parse(spec.param("Evaluator", "eval_config"),
                                        tfma.EvalConfig())
        (wer,) = [m for s in eval_config.metrics_specs for m in s.metrics
                  if m.class_name == "WordErrorRate"]
        (threshold,) = wer.per_slice_thresholds
        return threshold.threshold

    spec = _compile(tmp_path, baseline_model_uri=BASELINE,
                    options=run_options.RunOptions.resolve(
                        "tiny", max_wer_regression=0.05))
    assert gate(spec).change_threshold.absolute.value == pytest.approx(
        0.05, abs=1e-9)

    out = tmp_path / "cli.json"
    args = ["compile-kubeflow", "--image", IMAGE, "--pipeline-root", ROOT,
            "--output", str(out), "--preset", "ci", "--baseline-model",
            BASELINE]
    assert cli.main(args + ["--max-wer-regression", "0.02",
                            "--wer-upper-bound", "0.4"]) == 0
    threshold = gate(Spec(json.loads(out.read_text())))
    assert threshold.change_threshold.absolute.value == pytest.approx(
        0.02, abs=1e-9)
    assert threshold.value_threshold.upper_bound.value == 0.4
    assert cli.build_parser().parse_args(
        args).max_wer_regression == config.MAX_WER_REGRESSION

    assert cli.main(args + ["--max-wer-regression", "-0.1"]) == 2
    assert "--max-wer-regression" in capsys.readouterr().err


def test_local_roots_only_when_allowed(tmp_path):
    """allow_local_root (tests/kfp_launcher.py) accepts absolute local
    roots; the default, and so the CLI, still rejects them."""
    local = str(tmp_path / "root")
    spec = _compile(tmp_path, pipeline_root=local + "/",
                    serving_model_dir=str(tmp_path / "serving"),
                    allow_local_root=True)
    assert spec.spec["defaultPipelineRoot"] == local
    push = json.loads(spec.param("Pusher", "push_destination"))
    assert push["filesystem"]["base_directory"] == str(tmp_path / "serving")
    for kwargs, match in [({"pipeline_root": "relative/root"},
                           "--pipeline-root"),
                          ({"pipeline_root": "minio://b/root"},
                           "--pipeline-root"),
                          ({"pipeline_root": local,
                            "serving_model_dir": "serving"},
                           "--serving-model-dir")]:
        with pytest.raises(kfr.KubeflowConfigError, match=match):
            _compile(tmp_path, allow_local_root=True, **kwargs)
    with pytest.raises(kfr.KubeflowConfigError, match="--pipeline-root"):
        _compile(tmp_path, pipeline_root=local)


def test_cli_beam_width_reaches_the_exporter_not_the_trainer(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    args = ["compile-kubeflow", "--image", IMAGE, "--pipeline-root", ROOT,
            "--output", str(out), "--preset", "tiny"]
    assert cli.main(args + ["--beam-width", "2"]) == 0
    spec = Spec(json.loads(out.read_text()))
    decode = json.loads(spec.param("ModelExporter", "decode"))
    assert decode["beam_width"] == 2
    assert decode["method"] == config.ATTENTION_DECODING
    assert cli.main(args + ["--decoding", config.CTC_DECODING]) == 0
    spec = Spec(json.loads(out.read_text()))
    decode = json.loads(spec.param("ModelExporter", "decode"))
    assert decode["method"] == config.CTC_DECODING
    # The Trainer sees what training depends on, nothing of decoding.
    preset = json.loads(spec.param("Trainer", "custom_config"))["preset"]
    assert preset == config.training_dict(config.get_preset("tiny"))
    with pytest.raises(SystemExit):
        cli.main(args + ["--beam-width", "0"])
    assert "not a positive integer" in capsys.readouterr().err


def test_cli_rejects_a_minio_pipeline_root(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    rc = cli.main(["compile-kubeflow", "--image", IMAGE, "--pipeline-root",
                   "minio://mlpipeline/v2/artifacts", "--output", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --pipeline-root")
    assert "gs:// or s3://" in err and "minio://" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_compiles_an_s3_root_without_notes(tmp_path, capsys):
    """The image pins tensorflow-io and boto3: nothing is missing for s3://."""
    out = tmp_path / "pipeline.json"
    rc = cli.main(["compile-kubeflow", "--image", IMAGE, "--pipeline-root",
                   "s3://bucket/root", "--output", str(out), "--gpus", "0"])
    assert rc == 0
    assert "note:" not in capsys.readouterr().err
    spec = Spec(json.loads(out.read_text()))
    assert "accelerator" not in spec.container("Trainer")["resources"]


def test_dockerfile_workdir_matches_the_image_paths():
    dockerfile = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "Dockerfile")
    with open(dockerfile) as f:
        lines = [line.strip() for line in f]
    assert f"WORKDIR {kfr.IMAGE_APP_DIR}" in lines


# --- Several training workers: the Trainer as a TFJob ------------------------

@pytest.fixture(scope="module")
def workers_compiled(tmp_path_factory):
    """`compile-kubeflow --workers 3 --gpus 2`: (the spec, the TFJob
    manifest as written next to it)."""
    import yaml

    out = tmp_path_factory.mktemp("kfp_workers") / "pipeline.json"
    assert cli.main(["compile-kubeflow", "--image", IMAGE, "--pipeline-root",
                     ROOT, "--output", str(out), "--workers", "3",
                     "--gpus", "2"]) == 0
    with open(tfjob.manifest_path(str(out))) as f:
        manifest = yaml.safe_load(f)
    return Spec(json.loads(out.read_text())), manifest


def test_workers_compile_a_tfjob_running_the_trainers_own_command(
        workers_compiled, default_spec):
    spec, manifest = workers_compiled
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1",
                                                          "TFJob")
    assert list(manifest["spec"]["tfReplicaSpecs"]) == ["Worker"]
    worker = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3
    assert worker["restartPolicy"] == "OnFailure"
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # what the operator expects
    assert container["image"] == IMAGE
    # Exactly what the single-pod Trainer task runs: the TFX executor, with
    # KFP's executor-input placeholder that the launcher fills at run time.
    single = default_spec.container("Trainer")
    assert container["command"] == single["command"]
    assert container["args"] == single["args"]
    assert tfjob.EXECUTOR_INPUT_PLACEHOLDER in container["args"]
    assert container["resources"]["limits"] == {
        "cpu": kfr.DEFAULT_TRAINER_CPU, "memory": kfr.DEFAULT_TRAINER_MEMORY,
        "nvidia.com/gpu": "2"}
    # TF_CONFIG is the Training Operator's to set, per replica.
    assert "TF_CONFIG" not in json.dumps(manifest)
    assert "env" not in container


def test_workers_turn_the_trainer_task_into_the_tfjob_launcher(
        workers_compiled, default_spec):
    spec, manifest = workers_compiled
    launcher = spec.container("Trainer")
    assert launcher["image"] == IMAGE
    assert launcher["command"] == ["python", "-m", tfjob.LAUNCHER_MODULE]
    flag, embedded, dash = launcher["args"][:3]
    assert (flag, dash) == ("--manifest", "--")
    # The embedded manifest holds no placeholder for KFP to substitute
    # inside its JSON: the args come after `--`, resolved as the Trainer's.
    embedded = json.loads(embedded)
    assert tfjob.EXECUTOR_INPUT_PLACEHOLDER not in json.dumps(embedded)
    replica = manifest["spec"]["tfReplicaSpecs"]["Worker"]["template"][
        "spec"]["containers"][0]
    assert tfjob.fill_manifest(embedded, ["--x"]) == tfjob.fill_manifest(
        manifest, ["--x"])
    assert replica["args"] == default_spec.container("Trainer")["args"]
    assert launcher["args"][3:] == default_spec.container("Trainer")["args"]
    assert "resources" not in launcher  # the replicas hold the GPUs
    trainer_config = json.loads(spec.param("Trainer", "custom_config"))
    assert trainer_config[config.TRAINER_WORKERS_KEY] == 3
    assert config.TRAINER_WORKERS_KEY not in json.loads(
        default_spec.param("Trainer", "custom_config"))
    for task in COMPONENTS - {"Trainer"}:
        assert spec.container(task) == default_spec.container(task), task


def test_the_launcher_submits_the_resolved_args_and_waits(workers_compiled):
    _, manifest = workers_compiled
    args = manifest["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"][0]["args"]
    resolved = [json.dumps({"inputs": {}}) if a ==
                tfjob.EXECUTOR_INPUT_PLACEHOLDER else a for a in args]
    filled = tfjob.fill_manifest(manifest, resolved)
    assert filled["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"][0]["args"] == resolved
    assert tfjob.EXECUTOR_INPUT_PLACEHOLDER in json.dumps(manifest)
    with pytest.raises(ValueError, match="unresolved"):
        tfjob.fill_manifest(manifest, args)

    class FakeApi:
        """CustomObjectsApi: running once, then the given end state."""

        def __init__(self, end):
            self.end, self.created, self.polls = end, None, 0

        def create_namespaced_custom_object(self, group, version, namespace,
                                            plural, body):
            assert (group, version, plural) == ("kubeflow.org", "v1",
                                                "tfjobs")
            self.created = body
            return {"metadata": {"name": "moonshine-tfx-trainer-x1"}}

        def get_namespaced_custom_object(self, group, version, namespace,
                                         plural, name):
            assert name == "moonshine-tfx-trainer-x1"
            self.polls += 1
            if self.polls == 1:
                return {"status": {"conditions": [
                    {"type": "Running", "status": "True"}]}}
            return {"status": {"conditions": [
                {"type": "Running", "status": "False"},
                {"type": self.end, "status": "True"}]}}

    for end in ("Succeeded", "Failed"):
        api = FakeApi(end)
        assert tfjob.run_tfjob(api, "kubeflow", filled, poll_seconds=0) == end
        assert api.created == filled and api.polls == 2


def test_workers_options_are_checked(tmp_path, capsys):
    with pytest.raises(ValueError, match="trainer_workers must be >= 1"):
        run_options.RunOptions.resolve("ci", trainer_workers=0)
    with pytest.raises(SystemExit):
        cli.main(["compile-kubeflow", "--image", IMAGE, "--pipeline-root",
                  ROOT, "--workers", "0"])
    assert "not a positive integer" in capsys.readouterr().err
    # Vertex accelerator names are no Kubernetes resource a TFJob can ask.
    out = tmp_path / "p.json"
    assert cli.main(["compile-kubeflow", "--image", IMAGE, "--pipeline-root",
                     ROOT, "--output", str(out), "--workers", "2",
                     "--gpu-type", "NVIDIA_TESLA_A100"]) == 2
    assert "--gpu-type" in capsys.readouterr().err
    assert not out.exists()
    # One worker: no TFJob, no manifest.
    _compile(tmp_path, name="one.json")
    assert not os.path.exists(tfjob.manifest_path(str(tmp_path / "one.json")))
