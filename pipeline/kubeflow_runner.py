"""Compiles the pipeline for Kubeflow Pipelines (KFP v2) or Vertex AI Pipelines.

The same `create_pipeline` as the local run, compiled by TFX's
`KubeflowV2DagRunner` into a PipelineSpec YAML (what the open-source KFP UI
and `kfp` client upload) or a PipelineJob JSON (what Vertex AI Pipelines
submits). What differs from the local run:

- Every component runs in one image (`--image`, built from the repo's
  Dockerfile); the model code is referenced by dotted path
  (`models.preprocessing.preprocessing_fn`, `models.trainer.run_fn`) and baked
  into that image, so nothing is packaged at compile time.
- The Trainer asks for GPUs (`nvidia.com/gpu`, the Kubernetes resource name
  that open-source KFP uses verbatim) and CPU/memory limits through a
  ResourceSpec platform config.
- The Beam components (ExampleGen, StatisticsGen, Transform, Evaluator) get
  the pipeline's Beam args; the default is the DirectRunner over every core
  of the pod, and any runner (Dataflow, Flink, Spark) can be passed instead.
- No Resolver node: open-source KFP does not run TFX Resolvers. The
  Evaluator's baseline, when wanted, is imported (`baseline_model_uri`).
- Paths baked into the spec are read inside the containers: the pipeline
  root must be a TFX filesystem (`gs://`, `s3://`; KFP's default `minio://` is
  not one), and the schema and default corpus are the image's copies.
- With several training workers (`RunOptions.trainer_workers`, the CLI's
  `--workers N`) the Trainer task launches a TFJob of N replicas that run
  the Trainer's own executor (pipeline/tfjob.py); its manifest is written
  next to the output (`<output>.trainer-tfjob.yaml`).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from typing import Dict, Optional, Sequence, Union

from pipeline import beam
from pipeline import tfjob
from pipeline.options import RunOptions

REMOTE_SCHEMES = ("gs://", "s3://")
# Where the Dockerfile puts the repo (WORKDIR); paths below are in the image.
IMAGE_APP_DIR = "/opt/moonshine-tfx"
IMAGE_SCHEMA_FILE = posixpath.join(IMAGE_APP_DIR, "schemas", "schema.pbtxt")
IMAGE_EMBEDDED_CORPUS = posixpath.join(IMAGE_APP_DIR, "data",
                                       "embedded-corpus")

DEFAULT_GPU_TYPE = "nvidia.com/gpu"
DEFAULT_TRAINER_CPU = "8"
DEFAULT_TRAINER_MEMORY = "32G"
# A cluster trains the paper's tiny by default (a laptop, the demo preset).
DEFAULT_PRESET = "tiny"

# Kubernetes quantity suffixes relative to the GB that KFP's ResourceSpec uses.
_MEMORY_UNITS_GB = {
    "": 1.0, "K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3,
    "Ki": 2**10 / 1e9, "Mi": 2**20 / 1e9, "Gi": 2**30 / 1e9,
    "Ti": 2**40 / 1e9,
}


class KubeflowConfigError(ValueError):
    """A compile option the user can fix (bad scheme, bad quantity...)."""


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def _is_local_absolute(uri: str) -> bool:
    return uri.startswith("/") and "://" not in uri


def check_pipeline_root(pipeline_root: str, allow_local: bool = False) -> str:
    if allow_local and _is_local_absolute(pipeline_root):
        return pipeline_root.rstrip("/") or "/"
    if not is_remote(pipeline_root):
        scheme = pipeline_root.split("://", 1)[0] + "://" \
            if "://" in pipeline_root else "a local path"
        raise KubeflowConfigError(
            f"--pipeline-root {pipeline_root!r}: must be a gs:// or s3:// URI "
            f"that every component's pod can reach, not {scheme}"
            + (" (KFP's default minio:// is not a TFX filesystem scheme; "
               "point at the MinIO bucket through s3:// instead)"
               if pipeline_root.startswith("minio://") else ""))
    return pipeline_root.rstrip("/")


def _check_container_path(option: str, uri: str) -> str:
    """A path read inside the pods: remote, or absolute in the image."""
    if is_remote(uri) or _is_local_absolute(uri):
        return uri
    raise KubeflowConfigError(
        f"{option} {uri!r}: must be a gs:// or s3:// URI, or an absolute "
        f"path inside the image (e.g. {IMAGE_EMBEDDED_CORPUS})")


def _parse_quantity(option: str, value: Union[str, float, int],
                    units: Dict[str, float], examples: str) -> float:
    """A positive Kubernetes-style quantity, scaled by its unit suffix."""
    suffixes = "|".join(sorted((u for u in units if u), key=len, reverse=True))
    m = re.fullmatch(rf"\s*([0-9]*\.?[0-9]+)\s*({suffixes})?\s*", str(value))
    if not m or float(m.group(1)) <= 0:
        raise KubeflowConfigError(
            f"{option} {value!r}: expected a positive quantity like {examples}")
    return float(m.group(1)) * units[m.group(2) or ""]


def parse_memory_gb(value: Union[str, float, int]) -> float:
    """'32G', '32Gi', '512Mi', '64' (GB) -> GB as KFP's ResourceSpec wants."""
    return _parse_quantity("--trainer-memory", value, _MEMORY_UNITS_GB,
                           "32G, 32Gi or 512Mi")


def parse_cpu(value: Union[str, float, int]) -> float:
    """'8', '7.5', '500m' -> cores."""
    return _parse_quantity("--trainer-cpu", value, {"": 1.0, "m": 1e-3},
                           "8, 7.5 or 500m")


@dataclasses.dataclass(frozen=True)
class TrainerResources:
    """What the Trainer's pod asks for: GPUs, CPU and memory limits."""
    gpus: int = 1
    cpu: Union[str, float] = DEFAULT_TRAINER_CPU  # 8, 7.5, 500m
    memory: Union[str, float] = DEFAULT_TRAINER_MEMORY  # 32G, 32Gi, 512Mi
    gpu_type: str = DEFAULT_GPU_TYPE

    def resource_spec(self):
        """The KFP ResourceSpec (CPU in cores, memory in GB, accelerator)."""
        from kfp.pipeline_spec import pipeline_spec_pb2

        if self.gpus < 0:
            raise KubeflowConfigError(f"--gpus {self.gpus}: must be >= 0")
        resource_spec = (pipeline_spec_pb2.PipelineDeploymentConfig
                         .PipelineContainerSpec.ResourceSpec)
        spec = resource_spec(cpu_limit=parse_cpu(self.cpu),
                             memory_limit=parse_memory_gb(self.memory))
        if self.gpus:
            if not self.gpu_type:
                raise KubeflowConfigError("--gpu-type must not be empty")
            spec.accelerator.CopyFrom(resource_spec.AcceleratorConfig(
                type=self.gpu_type, count=self.gpus))
        return spec

    def replica_limits(self) -> Dict[str, str]:
        """The same limits as Kubernetes resource limits of one TFJob
        replica (the GPU type must then be a Kubernetes resource name)."""
        self.resource_spec()  # the same checks
        limits = {"cpu": str(self.cpu), "memory": str(self.memory)}
        if self.gpus:
            if "/" not in self.gpu_type:
                raise KubeflowConfigError(
                    f"--gpu-type {self.gpu_type!r}: TFJob replicas need a "
                    "Kubernetes resource name such as nvidia.com/gpu")
            limits[self.gpu_type] = str(self.gpus)
        return limits


def _k8s_name(text: str) -> str:
    """text as a Kubernetes object name (lower case, digits and '-')."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50] or "job"


def _trainer_as_tfjob(job: dict, options: RunOptions,
                      resources: TrainerResources) -> dict:
    """Makes the compiled Trainer task launch a TFJob of
    options.trainer_workers replicas (pipeline/tfjob.py); returns the
    TFJob's manifest."""
    spec = job["pipelineSpec"]
    ref = spec["root"]["dag"]["tasks"]["Trainer"]["componentRef"]["name"]
    executor = spec["deploymentSpec"]["executors"][
        spec["components"][ref]["executorLabel"]]
    container = executor["container"]
    manifest = tfjob.tfjob_manifest(
        _k8s_name(f"{options.pipeline_name}-trainer"), container["image"],
        container["command"], container["args"], options.trainer_workers,
        resources.replica_limits())
    executor["container"] = tfjob.launcher_container(container, manifest)
    return manifest


def _checked_locations(options: RunOptions, image: str, pipeline_root: str,
                       data_root: Optional[str], schema_file: str,
                       serving_model_dir: Optional[str],
                       baseline_model_uri: Optional[str],
                       allow_local_root: bool):
    """(pipeline_root, data_root, schema_file, serving_model_dir), checked
    and defaulted; KubeflowConfigError names the first bad one."""
    pipeline_root = check_pipeline_root(pipeline_root, allow_local_root)

    def shared(uri: str) -> bool:  # a place every pod can reach
        return is_remote(uri) or (allow_local_root and _is_local_absolute(uri))

    if not image or any(c.isspace() for c in image):
        raise KubeflowConfigError(f"--image {image!r}: expected an image "
                                  "reference like REGISTRY/moonshine-tfx:TAG")
    data_root = _check_container_path(
        "--data-root", data_root or IMAGE_EMBEDDED_CORPUS)
    schema_file = _check_container_path("--schema-file", schema_file)
    if serving_model_dir is None:
        serving_model_dir = posixpath.join(pipeline_root,
                                           options.pipeline_name,
                                           "serving_model")
    elif not shared(serving_model_dir):
        raise KubeflowConfigError(
            f"--serving-model-dir {serving_model_dir!r}: must be a gs:// or "
            "s3:// URI (a pod's local disk is gone when the Pusher exits)")
    if baseline_model_uri is not None and not shared(baseline_model_uri):
        raise KubeflowConfigError(
            f"--baseline-model {baseline_model_uri!r}: must be a gs:// or "
            "s3:// URI of an exported model artifact")
    return pipeline_root, data_root, schema_file, serving_model_dir


def _compiled_job(p, image: str, pipeline_root: str, resource_spec) -> Dict:
    """The PipelineJob of `p`, every component on `image`, the Trainer's pod
    sized by `resource_spec`."""
    from tfx import v1 as tfx

    (trainer,) = [c for c in p.components
                  if isinstance(c, tfx.components.Trainer)]
    trainer.with_platform_config(resource_spec)
    # Schema 2.1.0: what the kfp 2.x SDK emits and the KFP 2 backend reads
    # (`constant` parameter values, `parameterType`); Vertex reads it too.
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=True))
    job = runner.run(p, write_out=False)
    # TFX puts the root only in the PipelineJob's runtimeConfig, which a bare
    # PipelineSpec (the YAML that the KFP UI and `kfp` client upload) drops;
    # defaultPipelineRoot carries it there too (as kfp's
    # @dsl.pipeline(pipeline_root=...) does).
    job["pipelineSpec"]["defaultPipelineRoot"] = pipeline_root
    return job


def compile_kubeflow(
    options: RunOptions,
    image: str,
    pipeline_root: str,
    output: str = "pipeline.json",
    data_root: Optional[str] = None,
    resources: TrainerResources = TrainerResources(),
    beam_args: Optional[Sequence[str]] = None,
    baseline_model_uri: Optional[str] = None,
    serving_model_dir: Optional[str] = None,
    schema_file: str = IMAGE_SCHEMA_FILE,
    *,
    allow_local_root: bool = False,
) -> str:
    """Compiles the pipeline of `options` to `output`; returns its path.

    `.yaml`/`.yml`: the PipelineSpec, the only form the open-source KFP UI and
    `kfp` client upload; otherwise the PipelineJob JSON that Vertex AI submits.

    Args:
      options: the run's options (preset, splits, steps, gate, caching).
      image: the pipeline image (the repo's Dockerfile), e.g.
        `us-docker.pkg.dev/P/R/moonshine-tfx:0.1.0`; every component runs it.
      pipeline_root: gs:// or s3:// root of every artifact.
      output: where to write the compiled pipeline.
      data_root: LibriSpeech-layout root read by ExampleGen (gs://, s3:// or
        an absolute path in the image); default the image's embedded corpus.
      resources: the Trainer pod's GPUs, CPU and memory.
      beam_args: Beam pipeline args of ExampleGen, StatisticsGen, Transform
        and Evaluator; default beam.DEFAULT_KUBEFLOW_ARGS.
      baseline_model_uri: an exported model artifact URI (the directory that
        holds `Format-Serving/`) imported as the Evaluator's baseline for the
        no-regression check; without it only the absolute bounds gate.
      serving_model_dir: where the Pusher copies blessed models; default
        `<pipeline_root>/<pipeline_name>/serving_model`.
      schema_file: the curated schema as the pods see it.
      allow_local_root: also accept absolute local paths for the pipeline
        root, the serving model dir and the baseline model. Only for
        executing the compiled spec on this machine (tests/kfp_launcher.py);
        a cluster's pods share no local disk, so the CLI never sets it.
    """
    # Every option is checked before TFX (seconds to import) is loaded.
    (pipeline_root, data_root, schema_file,
     serving_model_dir) = _checked_locations(
         options, image, pipeline_root, data_root, schema_file,
         serving_model_dir, baseline_model_uri, allow_local_root)
    resource_spec = resources.resource_spec()
    if options.trainer_workers > 1:
        resources.replica_limits()

    from pipeline import pipeline as pipeline_def

    p = pipeline_def.create_pipeline(
        options,
        pipeline_root=pipeline_root,
        data_root=data_root,
        serving_model_dir=serving_model_dir,
        metadata_connection_config=None,  # KFP brings its own ML Metadata
        beam_pipeline_args=beam.kubeflow_args(beam_args),
        schema_file=schema_file,
        use_resolver=False,
        baseline_model_uri=baseline_model_uri)
    job = _compiled_job(p, image, pipeline_root, resource_spec)
    manifest = (_trainer_as_tfjob(job, options, resources)
                if options.trainer_workers > 1 else None)
    path = write_pipeline(job, output)
    if manifest:
        _write_manifest(manifest, tfjob.manifest_path(output))
    return path


def _write_manifest(manifest: dict, path: str) -> None:
    import yaml
    from tfx.dsl.io import fileio

    with fileio.open(path, "w") as f:
        yaml.safe_dump(manifest, f, sort_keys=False)


def write_pipeline(job: dict, output: str) -> str:
    """A .yaml/.yml output gets the PipelineSpec, anything else the whole
    PipelineJob as JSON, as KubeflowV2DagRunner writes them."""
    import json

    import yaml
    from tfx.dsl.io import fileio

    parent = os.path.dirname(output)
    if parent and not fileio.exists(parent):
        fileio.makedirs(parent)
    with fileio.open(output, "w") as f:
        if output.endswith((".yaml", ".yml")):
            yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
        else:
            json.dump(job, f, sort_keys=True, indent=2)
    return output
