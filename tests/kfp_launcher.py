"""Runs a compiled TFX PipelineSpec on this machine, as the KFP v2 launcher would.

What `compile-kubeflow` hands a cluster is a PipelineSpec (the YAML, or the
`pipelineSpec` of the PipelineJob JSON). On a cluster, for every task of
`root.dag.tasks`, the KFP driver builds an ExecutorInput from the spec and ML
Metadata, the launcher runs the executor's container with that JSON in place
of the `{{$}}` placeholder, then reads the ExecutorOutput file the container
wrote and records the output artifacts in ML Metadata, where downstream tasks
find them. This module does the same with subprocesses and a dict standing in
for ML Metadata, so a test can prove that the compiled spec runs:

    spec = load_pipeline_spec("pipeline.json")
    run = Launcher(spec, pipeline_root="/tmp/root").run()
    run.tasks["Pusher"].outputs["pushed_model"]["uri"]

How each piece maps to the real thing (kubeflow/pipelines backend/src/v2:
driver/driver.go, driver/resolve.go, component/launcher_v2.go,
metadata/client.go, metadata/converter.go; kfp 2.5's kfp/local, which does the
same for one task; and TFX's own testdata for kubeflow_v2_run_executor):

- Order: tasks run one at a time, upstream first, by `dependentTasks` and the
  producers of `taskOutputArtifact`/`taskOutputParameter` inputs.
- Parameters (`inputs.parameterValues`): `runtimeValue.constant` as is;
  `componentInputParameter` from the run's parameters or the root's
  defaults; `taskOutputParameter` from the producer's output parameters. A
  STRING parameter given a non-string value is passed as its JSON text (the
  driver's type conversion).
- Input artifacts (`inputs.artifacts`): the producer's recorded output, as
  the driver reads it back from ML Metadata: `name` its id, `uri`, `metadata`
  its custom properties, `type` the ML Metadata type (the schema's title).
- Output artifacts (`outputs.artifacts`): `uri`
  `<pipeline_root>/<pipeline name>/<run id>/<task>/<output key>`, `type` the
  component's output definition, empty `metadata`; `outputs.outputFile` a
  per-task `executor_output.json`; output parameters get an `outputFile` each.
- After the container exits 0, each output artifact is the ExecutorInput's
  merged with the ExecutorOutput's (a URI, if set, replaces it; metadata
  fields are merged in), then recorded: metadata becomes custom properties as
  ML Metadata stores them (numbers as doubles, bools as ints, lists and
  structs wrapped in a struct under "list"/"struct") plus `display_name`, and
  that is what downstream tasks read. TFX writes its artifact properties
  (`split_names`, `span`, ...) and custom properties (the ExampleGen's
  ingestion report, the Evaluator's `blessed`) there, so they must survive
  this round trip.
- FileBasedExampleGen: its container spec has `lifecycle.preCacheCheck`, the
  TFX driver that Vertex AI runs before the cache check (open-source KFP
  skips it). It runs first with the same ExecutorInput; its ExecutorOutput
  (span, fingerprint, resolved input_config, the examples artifact's span)
  updates the task's parameters and output artifact, and stays in
  `outputFile`, which TFX's executor entry point also reads.
- Importer (`importer` executor spec): no container. The driver itself
  records an artifact with `artifactUri`, `typeSchema` and `metadata`.
- The image is this checkout: `python` is this interpreter, the working
  directory and PYTHONPATH the repo root (the image's /opt/moonshine-tfx),
  and TF_USE_LEGACY_KERAS=1 as the Dockerfile sets it.

Not emulated: caching, retries, conditions (`triggerPolicy`), loops, nested
DAGs, resources and the object-store download/upload (TFX executors read and
write their URIs directly, so a local root needs none).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
EXECUTOR_OUTPUT_FILE = "executor_output.json"
# The environment the Dockerfile gives every container.
IMAGE_ENV = {"TF_USE_LEGACY_KERAS": "1"}
TAIL_CHARS = 4000


class TaskFailed(RuntimeError):
    """A task's container exited non-zero or wrote no ExecutorOutput."""

    def __init__(self, task: str, step: "Step", reason: str):
        self.task, self.step = task, step
        super().__init__(
            f"task {task!r} ({step.name}) {reason} after {step.seconds:.1f}s; "
            f"log {step.log_path}; last output:\n{step.tail}")


@dataclasses.dataclass
class Step:
    """One process of a task: the ExampleGen driver or the executor."""
    name: str
    command: List[str]
    returncode: int
    seconds: float
    log_path: str
    tail: str


@dataclasses.dataclass
class TaskResult:
    name: str
    kind: str  # "container" or "importer"
    seconds: float
    executor_input: Dict[str, Any]
    executor_output: Optional[Dict[str, Any]]
    # Output key -> the artifact as recorded (what downstream tasks get).
    outputs: Dict[str, Dict[str, Any]]
    output_parameters: Dict[str, Any]
    steps: List[Step]


@dataclasses.dataclass
class PipelineRun:
    run_dir: str
    order: List[str]
    tasks: Dict[str, TaskResult]

    def timings(self) -> Dict[str, float]:
        return {name: round(self.tasks[name].seconds, 1)
                for name in self.order}


def load_pipeline_spec(path: str) -> Dict[str, Any]:
    """The PipelineSpec in a compiled file: a PipelineJob JSON's
    `pipelineSpec`, or a PipelineSpec YAML/JSON as is."""
    with open(path) as f:
        doc = yaml.safe_load(f)  # JSON is YAML
    return doc.get("pipelineSpec", doc)


def topological_order(spec: Dict[str, Any]) -> List[str]:
    """Task names, every task after the tasks it depends on (ties by name)."""
    tasks = spec["root"]["dag"]["tasks"]
    upstream = {name: _upstream_tasks(task) for name, task in tasks.items()}
    for name, deps in upstream.items():
        unknown = deps - set(tasks)
        if unknown:
            raise ValueError(f"task {name!r} depends on unknown tasks "
                             f"{sorted(unknown)}")
    order: List[str] = []
    done: set = set()
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and upstream[n] <= done)
        if not ready:
            raise ValueError("dependency cycle among tasks "
                             f"{sorted(set(tasks) - done)}")
        order.extend(ready)
        done.update(ready)
    return order


def _upstream_tasks(task: Dict[str, Any]) -> set:
    deps = set(task.get("dependentTasks", []))
    inputs = task.get("inputs", {})
    for spec in inputs.get("artifacts", {}).values():
        if "taskOutputArtifact" in spec:
            deps.add(spec["taskOutputArtifact"]["producerTask"])
    for spec in inputs.get("parameters", {}).values():
        if "taskOutputParameter" in spec:
            deps.add(spec["taskOutputParameter"]["producerTask"])
    return deps


def schema_title(type_schema: Dict[str, Any]) -> str:
    """The ML Metadata type name of an ArtifactTypeSchema (its title)."""
    if "schemaTitle" in type_schema:
        return type_schema["schemaTitle"]
    if "instanceSchema" in type_schema:
        title = (yaml.safe_load(type_schema["instanceSchema"]) or {}).get(
            "title")
        if title:
            return title
    raise ValueError(f"artifact type without a title: {type_schema}")


def to_mlmd_value(value: Any) -> Dict[str, Any]:
    """A metadata field (a protobuf Value as JSON) as ML Metadata stores it
    (KFP's metadata/converter.go structValueToMLMDValue)."""
    if isinstance(value, bool):
        return {"int_value": int(value)}
    if isinstance(value, str):
        return {"string_value": value}
    if isinstance(value, (int, float)):
        return {"double_value": float(value)}
    if isinstance(value, list):
        return {"struct_value": {"list": value}}
    if isinstance(value, dict):
        return {"struct_value": {"struct": value}}
    raise TypeError(f"unsupported metadata value {value!r}")


def from_mlmd_value(value: Dict[str, Any]) -> Any:
    """An ML Metadata value as the driver puts it in a RuntimeArtifact's
    metadata (converter.go toRuntimeArtifact: numbers as numbers, structs as
    stored, i.e. still wrapped)."""
    (kind, v), = value.items()
    return float(v) if kind in ("int_value", "double_value") else v


class Launcher:
    """Runs the tasks of one PipelineSpec, one process per container task."""

    def __init__(self, spec: Dict[str, Any], pipeline_root: Optional[str] = None,
                 run_id: Optional[str] = None,
                 parameter_values: Optional[Dict[str, Any]] = None,
                 repo_root: str = REPO_ROOT, python: str = sys.executable,
                 env: Optional[Dict[str, str]] = None,
                 timeout_s: float = 1800):
        self.spec = spec
        self.pipeline_root = (pipeline_root
                              or spec.get("defaultPipelineRoot", "")).rstrip("/")
        if not self.pipeline_root.startswith("/"):
            raise ValueError(f"pipeline root {self.pipeline_root!r}: this "
                             "launcher runs on local absolute paths only")
        self.pipeline_name = spec["pipelineInfo"]["name"]
        self.run_id = run_id or "run-" + datetime.datetime.now().strftime(
            "%Y%m%d-%H%M%S-%f")
        self.run_dir = os.path.join(self.pipeline_root, self.pipeline_name,
                                    self.run_id)
        self.parameter_values = dict(parameter_values or {})
        self.repo_root = repo_root
        self.python = python
        self.env = env
        self.timeout_s = timeout_s
        self.tasks = spec["root"]["dag"]["tasks"]
        self.executors = spec["deploymentSpec"]["executors"]
        # Stand-in for ML Metadata: recorded artifacts by (task, output key).
        self._artifacts: Dict[tuple, Dict[str, Any]] = {}
        self._output_parameters: Dict[str, Dict[str, Any]] = {}
        self._next_id = 1

    # -- the spec -----------------------------------------------------------

    def component(self, task: str) -> Dict[str, Any]:
        return self.spec["components"][self.tasks[task]["componentRef"]["name"]]

    def executor_spec(self, task: str) -> Dict[str, Any]:
        return self.executors[self.component(task)["executorLabel"]]

    def task_dir(self, task: str) -> str:
        return os.path.join(self.run_dir, task)

    # -- ML Metadata stand-in -----------------------------------------------

    def record_artifact(self, task: str, key: str,
                        runtime_artifact: Dict[str, Any]) -> Dict[str, Any]:
        """Records an output artifact as the launcher does (RecordArtifact)
        and returns it as downstream tasks will read it."""
        custom_properties = {k: to_mlmd_value(v) for k, v in
                             runtime_artifact.get("metadata", {}).items()}
        custom_properties.setdefault("display_name", {"string_value": key})
        record = {"id": self._next_id,
                  "type": schema_title(runtime_artifact["type"]),
                  "uri": runtime_artifact["uri"],
                  "custom_properties": custom_properties}
        self._next_id += 1
        self._artifacts[(task, key)] = record
        return self.read_artifact(task, key)

    def read_artifact(self, task: str, key: str) -> Dict[str, Any]:
        """A recorded artifact as a RuntimeArtifact (JSON) for an input."""
        try:
            record = self._artifacts[(task, key)]
        except KeyError:
            raise ValueError(f"no artifact {key!r} recorded for task "
                             f"{task!r}; did it run?") from None
        return {"name": str(record["id"]),
                "type": {"schemaTitle": record["type"]},
                "uri": record["uri"],
                "metadata": {k: from_mlmd_value(v) for k, v in
                             record["custom_properties"].items()}}

    # -- ExecutorInput ------------------------------------------------------

    def resolve_parameters(self, task: str) -> Dict[str, Any]:
        definitions = self.component(task).get("inputDefinitions", {}).get(
            "parameters", {})
        root_defaults = {
            name: p["defaultValue"] for name, p in
            self.spec["root"].get("inputDefinitions", {}).get(
                "parameters", {}).items() if "defaultValue" in p}
        values = {}
        for name, spec in self.tasks[task].get("inputs", {}).get(
                "parameters", {}).items():
            if "runtimeValue" in spec:
                if "constant" not in spec["runtimeValue"]:
                    raise NotImplementedError(
                        f"task {task!r} parameter {name!r}: "
                        f"{spec['runtimeValue']} (only schema 2.1 "
                        "`constant` values are emulated)")
                value = spec["runtimeValue"]["constant"]
            elif "componentInputParameter" in spec:
                ref = spec["componentInputParameter"]
                if ref in self.parameter_values:
                    value = self.parameter_values[ref]
                elif ref in root_defaults:
                    value = root_defaults[ref]
                else:
                    raise ValueError(f"task {task!r} parameter {name!r}: no "
                                     f"value for pipeline parameter {ref!r}")
            elif "taskOutputParameter" in spec:
                ref = spec["taskOutputParameter"]
                value = self._output_parameters[ref["producerTask"]][
                    ref["outputParameterKey"]]
            else:
                raise NotImplementedError(
                    f"task {task!r} parameter {name!r}: {spec}")
            if (definitions.get(name, {}).get("parameterType") == "STRING"
                    and not isinstance(value, str)):
                value = json.dumps(value)
            values[name] = value
        return values

    def resolve_input_artifacts(self, task: str) -> Dict[str, Any]:
        artifacts = {}
        for name, spec in self.tasks[task].get("inputs", {}).get(
                "artifacts", {}).items():
            if "taskOutputArtifact" not in spec:
                raise NotImplementedError(
                    f"task {task!r} input artifact {name!r}: {spec}")
            ref = spec["taskOutputArtifact"]
            artifacts[name] = {"artifacts": [self.read_artifact(
                ref["producerTask"], ref["outputArtifactKey"])]}
        return artifacts

    def executor_input(self, task: str) -> Dict[str, Any]:
        """The ExecutorInput (protobuf JSON) the driver builds for `task`."""
        outputs = self.component(task).get("outputDefinitions", {})
        task_dir = self.task_dir(task)
        executor_input = {
            "inputs": {"parameterValues": self.resolve_parameters(task),
                       "artifacts": self.resolve_input_artifacts(task)},
            "outputs": {
                "artifacts": {
                    key: {"artifacts": [{
                        "type": spec["artifactType"],
                        "uri": f"{task_dir}/{key}",
                        "metadata": {}}]}
                    for key, spec in outputs.get("artifacts", {}).items()},
                "parameters": {
                    key: {"outputFile": os.path.join(task_dir, "outputs", key)}
                    for key in outputs.get("parameters", {})},
                "outputFile": os.path.join(task_dir, EXECUTOR_OUTPUT_FILE),
            },
        }
        return _validated(executor_input, "ExecutorInput")

    # -- running ------------------------------------------------------------

    def run(self, tasks: Optional[Iterable[str]] = None) -> PipelineRun:
        """Runs every task (or the given ones, in dependency order)."""
        order = topological_order(self.spec)
        if tasks is not None:
            wanted = set(tasks)
            order = [t for t in order if t in wanted]
        results = {}
        for task in order:
            results[task] = self.run_task(task)
        run = PipelineRun(self.run_dir, order, results)
        os.makedirs(self.run_dir, exist_ok=True)
        with open(os.path.join(self.run_dir, "launcher_report.json"), "w") as f:
            json.dump({"order": order, "seconds": run.timings(),
                       "outputs": {t: r.outputs for t, r in results.items()}},
                      f, indent=2, sort_keys=True)
        return run

    def run_task(self, task: str) -> TaskResult:
        if "triggerPolicy" in self.tasks[task]:
            raise NotImplementedError(f"task {task!r}: conditions are not "
                                      "emulated")
        executor = self.executor_spec(task)
        start = time.monotonic()
        if "importer" in executor:
            return self._run_importer(task, executor["importer"], start)
        if "container" not in executor:
            raise NotImplementedError(f"task {task!r}: executor {executor}")
        container = executor["container"]
        executor_input = self.executor_input(task)
        output_file = executor_input["outputs"]["outputFile"]
        os.makedirs(os.path.dirname(output_file), exist_ok=True)
        steps = []

        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook:
            steps.append(self._run_process(task, "driver", hook, executor_input))
            driver_output = self._read_executor_output(task, steps[-1],
                                                       output_file)
            _apply_driver_output(executor_input, driver_output)

        steps.append(self._run_process(task, "executor", container,
                                       executor_input))
        executor_output = self._read_executor_output(task, steps[-1],
                                                     output_file)
        outputs = {}
        for key, artifact_list in executor_input["outputs"].get(
                "artifacts", {}).items():
            artifact = copy.deepcopy(artifact_list["artifacts"][0])
            produced = executor_output.get("artifacts", {}).get(key, {}).get(
                "artifacts", [])
            if produced:
                _merge_runtime_artifact(produced[0], artifact)
            outputs[key] = self.record_artifact(task, key, artifact)
        self._output_parameters[task] = self._collect_output_parameters(
            executor_input, executor_output)
        return TaskResult(task, "container", time.monotonic() - start,
                          executor_input, executor_output, outputs,
                          self._output_parameters[task], steps)

    def _run_importer(self, task: str, importer: Dict[str, Any],
                      start: float) -> TaskResult:
        """The driver's importer: records the artifact, runs nothing."""
        uri_spec = importer["artifactUri"]
        if "constant" in uri_spec:
            uri = uri_spec["constant"]
        else:
            uri = self.resolve_parameters(task)[uri_spec["runtimeParameter"]]
        (key,) = self.component(task)["outputDefinitions"]["artifacts"]
        artifact = {"type": importer["typeSchema"], "uri": uri,
                    "metadata": dict(importer.get("metadata", {}))}
        outputs = {key: self.record_artifact(task, key, artifact)}
        self._output_parameters[task] = {}
        return TaskResult(task, "importer", time.monotonic() - start, {},
                          None, outputs, {}, [])

    def _command(self, container: Dict[str, Any],
                 executor_input: Dict[str, Any]) -> List[str]:
        payload = json.dumps(executor_input, sort_keys=True)
        command = list(container.get("command", [])) + [
            payload if a == EXECUTOR_INPUT_PLACEHOLDER else a
            for a in container.get("args", [])]
        if command and command[0] in ("python", "python3"):
            command[0] = self.python  # the image's /opt/venv/bin/python
        left = [a for a in command if "{{$" in a and a != payload]
        if left:
            raise NotImplementedError(f"placeholders not emulated: {left}")
        return command

    def _run_process(self, task: str, name: str, container: Dict[str, Any],
                     executor_input: Dict[str, Any]) -> Step:
        command = self._command(container, executor_input)
        env = dict(os.environ if self.env is None else self.env)
        env.update(IMAGE_ENV)
        env["PYTHONPATH"] = os.pathsep.join(
            [self.repo_root] + ([env["PYTHONPATH"]]
                                if env.get("PYTHONPATH") else []))
        log_path = os.path.join(self.task_dir(task), f"{name}.log")
        start = time.monotonic()
        with open(log_path, "w") as log:
            try:
                returncode = subprocess.run(
                    command, cwd=self.repo_root, env=env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=self.timeout_s).returncode
            except subprocess.TimeoutExpired:
                returncode = None
        with open(log_path, errors="replace") as log:
            tail = log.read()[-TAIL_CHARS:]
        step = Step(name, command, returncode, time.monotonic() - start,
                    log_path, tail)
        if returncode is None:
            raise TaskFailed(task, step, f"timed out ({self.timeout_s}s)")
        if returncode != 0:
            raise TaskFailed(task, step, f"exited {returncode}")
        return step

    def _read_executor_output(self, task: str, step: Step,
                              output_file: str) -> Dict[str, Any]:
        if not os.path.isfile(output_file):
            raise TaskFailed(task, step,
                             f"exited 0 but wrote no ExecutorOutput "
                             f"{output_file}")
        with open(output_file) as f:
            return _validated(json.load(f), "ExecutorOutput")

    @staticmethod
    def _collect_output_parameters(executor_input: Dict[str, Any],
                                   executor_output: Dict[str, Any]
                                   ) -> Dict[str, Any]:
        """ExecutorOutput parameterValues, else each parameter's file."""
        values = dict(executor_output.get("parameterValues", {}))
        for key, spec in executor_input["outputs"].get("parameters",
                                                       {}).items():
            if key not in values and os.path.isfile(spec["outputFile"]):
                with open(spec["outputFile"]) as f:
                    values[key] = f.read()
        return values


def _apply_driver_output(executor_input: Dict[str, Any],
                         driver_output: Dict[str, Any]) -> None:
    """What the driver's ExecutorOutput changes before the executor runs:
    the task's parameters (span, fingerprint, the resolved input_config) and
    its output artifacts' metadata."""
    executor_input["inputs"]["parameterValues"].update(
        driver_output.get("parameterValues", {}))
    for key, artifact_list in driver_output.get("artifacts", {}).items():
        targets = executor_input["outputs"]["artifacts"].get(key)
        if targets and artifact_list.get("artifacts"):
            targets["artifacts"][0].setdefault("metadata", {}).update(
                artifact_list["artifacts"][0].get("metadata", {}))


def _merge_runtime_artifact(src: Dict[str, Any], dst: Dict[str, Any]) -> None:
    """launcher_v2.go mergeRuntimeArtifacts: the executor's URI (if any)
    replaces the provisioned one; its metadata fields are merged in."""
    if src.get("uri"):
        dst["uri"] = src["uri"]
    if src.get("metadata"):
        dst.setdefault("metadata", {}).update(src["metadata"])


def _validated(message: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The JSON message, checked against kfp's pipeline_spec proto `name`
    (an unknown or mistyped field fails here, not in the container)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    json_format.ParseDict(message, getattr(pipeline_spec_pb2, name)())
    return message
