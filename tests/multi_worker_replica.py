"""One worker of a multi-worker Trainer run on localhost (test_multi_worker).

Launched once per worker with TF_CONFIG set, as a TFJob or a Vertex worker
pool sets it on each replica: builds the Trainer's FnArgs over the
pipeline's own ExampleGen and Transform outputs (tests/pipeline_steps.py)
and calls `models.trainer.run_fn`, then dumps the weights this worker
exported. Every worker gets the same FnArgs, as every replica of a TFX
Trainer does.

    python tests/multi_worker_replica.py --examples URI --transform-graph URI
        --out DIR [--train-steps N] [--eval-steps N] [--crash-at-step N]

--crash-at-step N: this worker dies (os._exit(CRASH_EXIT_CODE)) as it is
about to run optimiser step N + 1, after the backup of step N.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CRASH_EXIT_CODE = 3
SERVING_DIR = "serving_model"
RUN_DIR = "model_run"
BACKUP_DIR = "backup"
WEIGHTS_DIR = "weights"


def fn_args(examples: str, transform_graph: str, out: str, train_steps: int,
            eval_steps: int, workers: int):
    """The FnArgs a TFX Trainer would pass run_fn for these artifacts: the
    ci preset in global batches of 2 (one utterance per worker, so an epoch
    of the 4 training utterances is 2 steps), backed up at every step.

    The fields of TFX's FnArgs (an attrs record) that run_fn reads, by the
    same names: importing TFX for the class would add seconds per worker.
    """
    import dataclasses
    import types

    from models import config

    preset = config.get_preset("ci")
    preset = dataclasses.replace(preset, train=dataclasses.replace(
        preset.train, batch_size=2, checkpoint_every_steps=1))

    return types.SimpleNamespace(
        train_files=[os.path.join(examples, "Split-train", "*.gz")],
        eval_files=[os.path.join(examples, "Split-eval", "*.gz")],
        train_steps=train_steps, eval_steps=eval_steps,
        transform_output=transform_graph,
        transform_graph_path=transform_graph,
        serving_model_dir=os.path.join(out, SERVING_DIR),
        model_run_dir=os.path.join(out, RUN_DIR),
        custom_config={
            "preset": config.training_dict(preset),
            # Outside the run dir, as the pipeline wires it: a restarted
            # job resumes from it.
            "backup_dir": os.path.join(out, BACKUP_DIR),
            config.TRAINER_WORKERS_KEY: workers})


def crash_at(step: int):
    """Makes run_fn's fit() kill this process before step `step` + 1."""
    import tf_keras as keras

    from models import trainer

    class _Crash(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == step:
                print(f"crashing before step {step + 1}", flush=True)
                os._exit(CRASH_EXIT_CODE)

    fit = trainer.fit

    def fit_then_crash(*args, callbacks=None, **kwargs):
        return fit(*args, callbacks=list(callbacks or []) + [_Crash()],
                   **kwargs)
    trainer.fit = fit_then_crash


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", required=True)
    p.add_argument("--transform-graph", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--eval-steps", type=int, default=1)
    p.add_argument("--crash-at-step", type=int, default=None)
    args = p.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.info("worker started")
    from models import distribution, serving, trainer

    tf_config = os.environ.get("TF_CONFIG")
    if args.crash_at_step is not None:
        crash_at(args.crash_at_step)
    fa = fn_args(args.examples, args.transform_graph, args.out,
                 args.train_steps, args.eval_steps,
                 distribution.cluster_size(tf_config))
    trainer.run_fn(fa)

    import numpy as np

    model, _ = serving.load_trained(trainer.export_dir(fa, tf_config))
    name = distribution.task_name(tf_config)
    os.makedirs(os.path.join(args.out, WEIGHTS_DIR), exist_ok=True)
    np.savez(os.path.join(args.out, WEIGHTS_DIR, f"{name}.npz"),
             *model.get_weights())
    print(json.dumps({"task": name, "done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
