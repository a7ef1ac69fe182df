"""Several training workers on Kubeflow: the Trainer as a TFJob.

KFP v2 runs each task as one pod, and TFX 1.16's KubeflowV2DagRunner has no
multi-replica Trainer for open-source KFP (the Vertex AI Training extension
does it on Google Cloud only). `compile-kubeflow --workers N` therefore
compiles the Trainer task into a launcher: its pod runs this module, which
submits a Kubeflow Training Operator TFJob of N Worker replicas, each
running the very command and arguments the Trainer task would have run
(the TFX executor and `models.trainer.run_fn`), and waits for it. The
operator sets TF_CONFIG on each replica; run_fn builds a
MultiWorkerMirroredStrategy from it, checks it names N workers, and only
worker 0 (the chief) writes the model artifact. The manifest is also
written next to the compiled pipeline (`<output>.trainer-tfjob.yaml`) for
review: its arguments still hold KFP's `{{$}}` placeholder, where the
launcher puts the args KFP resolved for this run (the executor input).

The launcher's pod needs RBAC to create and read `tfjobs.kubeflow.org` in
its namespace, and the cluster the Training Operator.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from typing import Dict, List, Optional, Sequence

TFJOB_API_VERSION = "kubeflow.org/v1"
TFJOB_GROUP, TFJOB_VERSION, TFJOB_PLURAL = "kubeflow.org", "v1", "tfjobs"
TFJOB_MANIFEST_SUFFIX = ".trainer-tfjob.yaml"
# KFP v2's placeholder of the whole executor input, in the Trainer's args.
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
LAUNCHER_MODULE = "pipeline.tfjob"
# The container name the Training Operator requires for a TFJob replica.
TF_CONTAINER = "tensorflow"
POLL_SECONDS = 30
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def manifest_path(output: str) -> str:
    """Where compile-kubeflow writes the Trainer's TFJob manifest."""
    return output + TFJOB_MANIFEST_SUFFIX


def tfjob_manifest(name: str, image: str, command: Sequence[str],
                   args: Sequence[str], workers: int,
                   limits: Dict[str, str]) -> dict:
    """A TFJob of `workers` Worker replicas running `command` + `args` in
    `image`, each with these resource limits; TF_CONFIG is the operator's."""
    container = {"name": TF_CONTAINER, "image": image,
                 "command": list(command), "args": list(args)}
    if limits:
        container["resources"] = {"limits": dict(limits)}
    return {
        "apiVersion": TFJOB_API_VERSION,
        "kind": "TFJob",
        "metadata": {"generateName": f"{name}-"},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running"},
            "tfReplicaSpecs": {"Worker": {
                "replicas": int(workers),
                "restartPolicy": "OnFailure",
                "template": {"spec": {"containers": [container]}},
            }},
        },
    }


def _container(manifest: dict) -> dict:
    (container,) = manifest["spec"]["tfReplicaSpecs"]["Worker"]["template"][
        "spec"]["containers"]
    return container


def launcher_container(container: dict, manifest: dict) -> dict:
    """The Trainer's KFP container turned into the TFJob launcher: same
    image, no resources of its own (the replicas have them), the manifest
    without its replicas' args (so that it holds no placeholder for KFP to
    substitute inside the JSON), then `--` and the original args, which KFP
    resolves as it would have for the Trainer."""
    embedded = copy.deepcopy(manifest)
    _container(embedded)["args"] = []
    launcher = {k: v for k, v in container.items() if k != "resources"}
    launcher["command"] = ["python", "-m", LAUNCHER_MODULE]
    launcher["args"] = (["--manifest", json.dumps(embedded, sort_keys=True),
                         "--"] + list(container["args"]))
    return launcher


def fill_manifest(manifest: dict, resolved_args: List[str]) -> dict:
    """The manifest with its replicas' args set to the ones KFP resolved
    for this run (what the launcher's own args end with)."""
    unresolved = [a for a in resolved_args if "{{$" in a]
    if not resolved_args or unresolved:
        raise ValueError("the Trainer's args reached the TFJob launcher "
                         f"unresolved ({unresolved[:1] or 'none'}): run it "
                         "as a KFP task, which substitutes the executor input")
    filled = copy.deepcopy(manifest)
    _container(filled)["args"] = list(resolved_args)
    return filled


def job_state(tfjob: dict) -> Optional[str]:
    """'Succeeded', 'Failed', or None while the TFJob runs."""
    for condition in (tfjob.get("status") or {}).get("conditions") or []:
        if (condition.get("type") in ("Succeeded", "Failed")
                and condition.get("status") == "True"):
            return condition["type"]
    return None


def run_tfjob(api, namespace: str, manifest: dict,
              poll_seconds: float = POLL_SECONDS) -> str:
    """Creates the TFJob with `api` (a kubernetes CustomObjectsApi) and
    waits for it to end: its final state."""
    created = api.create_namespaced_custom_object(
        TFJOB_GROUP, TFJOB_VERSION, namespace, TFJOB_PLURAL, manifest)
    name = created["metadata"]["name"]
    print(f"TFJob {namespace}/{name} submitted", flush=True)
    while True:
        state = job_state(api.get_namespaced_custom_object(
            TFJOB_GROUP, TFJOB_VERSION, namespace, TFJOB_PLURAL, name))
        if state:
            print(f"TFJob {namespace}/{name}: {state}", flush=True)
            return state
        time.sleep(poll_seconds)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--manifest", required=True, help="the TFJob, as JSON")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="-- then the Trainer's resolved executor args")
    ns = p.parse_args(argv)
    resolved = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    manifest = fill_manifest(json.loads(ns.manifest), resolved)

    from kubernetes import client, config as kube_config

    kube_config.load_incluster_config()
    with open(_NAMESPACE_FILE) as f:
        namespace = f.read().strip()
    state = run_tfjob(client.CustomObjectsApi(), namespace, manifest)
    return 0 if state == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
