"""A local Beam runner whose worker processes start warm: forked from a
server that has already imported TensorFlow, TFDV, TFT and our executors.

Beam's own multi-process mode (`--direct_running_mode=multi_processing`)
starts a fresh `python -m apache_beam.runners.worker.sdk_worker_main` per
worker for every data step, and each one spends 6-11 s of CPU importing
TensorFlow, TFDV, TFT and the ExampleGen's executor before its first element:
on the embedded corpus tiled 4x that is a third of each step, so two workers
ran slower than one in-process worker (BENCHMARKS.md). Here the FnApiRunner
talks to the workers as it talks to any external SDK harness (Beam's
ExternalEnvironment and its BeamFnExternalWorkerPool service), and the pool
starts each harness in a child of a multiprocessing forkserver that preloads
those modules once per run. The harness, the Fn API and the runner's bundle
splitting are Beam's own; only where the worker process comes from changes.

    --runner=pipeline.beam_pool.LocalRunner --direct_running_mode=multi_processing
    --direct_num_workers=N        (0: one per core)

Without multi_processing, or with one worker, it is the plain FnApiRunner.
"""

from __future__ import annotations

import _thread
import json
import logging
import multiprocessing
import os
import threading
import time
import traceback
import warnings
from concurrent import futures
from typing import Dict, Optional

# Set before the imports below, since this module is imported first in the
# forkserver (PRELOAD), a fresh interpreter that the CLI's warning filters
# never reach: the Google client libraries' notices about this Python
# version, which a user cannot act on, stay off the console.
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

import grpc  # noqa: E402
from apache_beam.options import pipeline_options
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.worker import worker_pool_main
from apache_beam.transforms import environments

# Imported once in the forkserver, so that a worker starts with them loaded.
# A module that fails to import there is imported by the worker as usual.
PRELOAD = ("pipeline.beam_pool", "tensorflow", "tensorflow_data_validation",
           "tensorflow_transform.beam", "tensorflow_model_analysis",
           "apache_beam.runners.worker.sdk_worker_main",
           "components.librispeech_example_gen.executor",
           "models.preprocessing", "models.metrics", "pipeline.beam_worker")
# Environment a worker takes from the process that ran the step when it
# starts (the forkserver's own is the one it had when it was started).
WORKER_ENVIRONMENT_PREFIXES = ("MOONSHINE_TFX_", "AWS_", "S3_", "TF_",
                               "GOOGLE_", "CLOUDSDK_")

WATCH_SECONDS = 1.0
# The ExternalEnvironment's parameter that carries the run's pipeline options
# (as sdk_worker_main reads them) to every StartWorker request.
OPTIONS_PARAM = "pipeline_options"

_LOGGER = logging.getLogger(__name__)


def _worker_environment() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k.startswith(WORKER_ENVIRONMENT_PREFIXES)}


def _run_harness(request_bytes: bytes, environment: Dict[str, str]) -> None:
    """The body of one worker process (a forkserver child): Beam's own SDK
    harness, set up as sdk_worker_main sets it up, with the run's pipeline
    options (they configure the filesystems, s3:// among them, the pickler
    and the plugins; Beam's own multi_processing workers get none)."""
    os.environ.update(environment)
    # Registers the run's filesystems (s3://) for tf.io.gfile, with this
    # run's environment (the forkserver imported it with its own).
    import importlib  # pylint: disable=import-outside-toplevel
    import pipeline.beam_worker  # pylint: disable=import-outside-toplevel
    importlib.reload(pipeline.beam_worker)
    from apache_beam.runners.worker import sdk_worker_main  # pylint: disable=import-outside-toplevel
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel

    request = beam_fn_api_pb2.StartWorkerRequest.FromString(request_bytes)
    harness_environment = {
        "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
            request.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
            request.logging_endpoint),
        "PIPELINE_OPTIONS": request.params[OPTIONS_PARAM],
        "WORKER_ID": request.worker_id,
    }
    # The worker's records reach the runner's log (its level, its format)
    # through the Fn API handler create_harness adds; not also this
    # process's stderr, which is the user's console.
    # TensorFlow's logger has a console handler of its own (added when it
    # found none on the root): its records go the same way.
    for logger in (logging.getLogger(), logging.getLogger("tensorflow")):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    logging.getLogger("tensorflow").propagate = True
    logging.getLogger(sdk_worker_main.__name__).addFilter(_NoMainSessionFilter())
    log_handler, harness, _ = sdk_worker_main.create_harness(
        harness_environment)
    try:
        harness.run()
    finally:
        if log_handler is not None:
            log_handler.close()


class _NoMainSessionFilter(logging.Filter):
    """Every worker warns that it found no pickled main session to load: the
    pipeline pickles none (--save_main_session is off), nothing to act on."""

    def filter(self, record):
        return "semi_persistent_directory" not in record.getMessage()


class PreloadedWorkerPool(worker_pool_main.BeamFnExternalWorkerPoolServicer):
    """Beam's worker pool service, starting each worker from the forkserver."""

    def __init__(self):
        super().__init__()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(PRELOAD))
        self._workers: Dict[str, multiprocessing.process.BaseProcess] = {}
        self._lock = threading.Lock()

    def watch(self) -> None:
        """A worker that dies would leave the runner waiting for it forever
        (the FnApiRunner has no timeout there): say so and interrupt it."""
        while True:
            time.sleep(WATCH_SECONDS)
            with self._lock:
                dead = {k: w for k, w in self._workers.items()
                        if w.exitcode not in (None, 0)}
                for k in dead:
                    del self._workers[k]
            for worker_id, worker in dead.items():
                _LOGGER.error("Beam worker %s (pid %s) died with exit status "
                              "%s; its traceback is above", worker_id,
                              worker.pid, worker.exitcode)
                _thread.interrupt_main()

    def warm_up(self) -> None:
        """Starts the forkserver (and its imports) without waiting for it."""
        from multiprocessing import forkserver  # pylint: disable=import-outside-toplevel
        forkserver.ensure_running()

    def StartWorker(self, start_worker_request, unused_context):  # noqa: N802
        request = start_worker_request
        try:
            worker = self._context.Process(
                target=_run_harness, daemon=True,
                name=f"beam-worker-{request.worker_id}",
                args=(request.SerializeToString(), _worker_environment()))
            worker.start()
            with self._lock:
                # Reaps the workers of earlier steps that ended well; one
                # that failed stays for watch() to report.
                self._workers = {k: w for k, w in self._workers.items()
                                 if w.exitcode != 0}
                self._workers[request.worker_id] = worker
            return beam_fn_api_pb2.StartWorkerResponse()
        except Exception:  # pylint: disable=broad-except
            return beam_fn_api_pb2.StartWorkerResponse(
                error=traceback.format_exc())

    def StopWorker(self, stop_worker_request, unused_context):  # noqa: N802
        with self._lock:
            worker = self._workers.pop(stop_worker_request.worker_id, None)
        if worker is not None and worker.is_alive():
            worker.terminate()
        return beam_fn_api_pb2.StopWorkerResponse()


_pool_address: Optional[str] = None
_pool_server = None  # held: a gRPC server that is garbage-collected stops
_pool_lock = threading.Lock()


def pool_address() -> str:
    """localhost:PORT of this process's worker pool (started once)."""
    global _pool_address, _pool_server  # pylint: disable=global-statement
    with _pool_lock:
        if _pool_address is None:
            pool = PreloadedWorkerPool()
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            port = server.add_insecure_port("localhost:0")
            beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
                pool, server)
            server.start()
            pool.warm_up()
            threading.Thread(target=pool.watch, daemon=True,
                             name="beam-worker-watch").start()
            _pool_address, _pool_server = f"localhost:{port}", server
    return _pool_address


class _InMemoryWarningFilter(logging.Filter):
    """The FnApiRunner warns that in_memory ignores direct_num_workers; with
    an external environment it does not (see LocalRunner.run_pipeline)."""

    def filter(self, record):
        return "direct_running_mode should be" not in record.getMessage()


# Once per process: Beam builds a runner for every Beam step.
logging.getLogger(fn_runner.__name__).addFilter(_InMemoryWarningFilter())


class LocalRunner(fn_runner.FnApiRunner):
    """FnApiRunner with warm multi-process workers (see the module doc)."""

    def run_pipeline(self, pipeline, options):
        direct = options.view_as(pipeline_options.DirectOptions)
        workers = (os.cpu_count() or 1) if direct.direct_num_workers == 0 \
            else (direct.direct_num_workers or 1)
        if multiprocessing.current_process().daemon:
            # A daemonic process (a multiprocessing.Pool worker) may not
            # start processes: Beam's own subprocess workers it is.
            _LOGGER.info("in a daemonic process: Beam's own worker processes")
        elif direct.direct_running_mode == "multi_processing":
            if workers > 1:
                self._default_environment = environments.ExternalEnvironment(
                    pool_address(), params={OPTIONS_PARAM: json.dumps(
                        {"options": options.get_all_options(
                            drop_default=True)}, default=str)})
            # The FnApiRunner would replace any environment of ours with its
            # own subprocess one in this mode; it keeps ours under in_memory,
            # and still splits every stage over `workers` harnesses. One
            # worker (a one-core machine) runs in this process.
            direct.direct_running_mode = "in_memory"
        return super().run_pipeline(pipeline, options)
