"""The Trainer's `run_fn`: Transform output in, trained weights out.

Teacher-forced cross-entropy with label smoothing plus the training-only CTC
loss (models/losses.py), on bucketed batches (models/data.py) augmented in
the train step (models/augment.py), under the strategy and precision that
models/distribution.py picks. The Trainer's model artifact holds the weights
and the preset that trained them (models/serving.save_trained); the
ModelExporter component turns them into the serving model, so decoding
settings never re-train.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import augment
from models import config
from models import data
from models import distribution
from models import losses
from models import moonshine
from models import serving
from models import weights


# --- Schedule and model ---------------------------------------------------

class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to max_lr, then cosine decay to min_lr_ratio * max_lr."""

    def __init__(self, max_lr, warmup_steps, total_steps, min_lr_ratio):
        self.max_lr = max_lr
        self.warmup_steps = max(1, warmup_steps)
        self.total_steps = max(total_steps, self.warmup_steps + 1)
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.max_lr * step / self.warmup_steps
        progress = tf.clip_by_value(
            (step - self.warmup_steps) / (self.total_steps - self.warmup_steps),
            0.0, 1.0)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        decayed = self.max_lr * (self.min_lr_ratio
                                 + (1.0 - self.min_lr_ratio) * cosine)
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"max_lr": self.max_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps,
                "min_lr_ratio": self.min_lr_ratio}


class Seq2SeqTrainer(keras.Model):
    """Wraps Moonshine with its training losses; not exported."""

    def __init__(self, model_config: config.ModelConfig,
                 train_config: config.TrainConfig, **kwargs):
        super().__init__(**kwargs)
        # The CTC head is trained whenever ctc_weight > 0 and saved with
        # the model: the export keeps it when the model decodes with it.
        self.moonshine = moonshine.Moonshine(model_config, with_ctc_head=True)
        self.model_config = model_config
        self.train_config = train_config
        self.trackers = [keras.metrics.Mean(name=name) for name in
                         ("loss", "ce_loss", "ctc_loss", "token_accuracy")]

    @property
    def metrics(self):
        return self.trackers

    def call(self, inputs, training=False):
        return self.moonshine(inputs, training=training)

    def _compute_losses(self, inputs, targets, training):
        """(loss, cross-entropy, CTC, token accuracy) of one batch."""
        features, lengths = inputs["features"], inputs["lengths"]
        if training and self.model_config.front_end.augmentable:
            features, lengths = augment.augment(
                features, lengths, self.train_config,
                # XLA: no shape may depend on the random stretch.
                static_shapes=bool(self._jit_compile))
        encoded, encoded_lengths = self.moonshine.encode(
            features, lengths, training=training)
        tokens = inputs["tokens"]
        if training and self.train_config.token_noise:
            tokens = losses.noisy_tokens(tokens, self.train_config.token_noise,
                                         self.model_config.vocab_size)
        logits = tf.cast(self.moonshine.decode(
            tokens, encoded, encoded_lengths, training=training), tf.float32)
        ce, accuracy = losses.cross_entropy(
            logits, targets, self.model_config.vocab_size,
            self.train_config.label_smoothing)
        ctc_weight = self.train_config.ctc_weight
        ctc = (losses.ctc(tf.cast(self.moonshine.ctc_logits(encoded),
                                  tf.float32),
                          encoded_lengths, targets,
                          jit_compile=bool(self._jit_compile))
               if ctc_weight > 0 else tf.constant(0.0))
        return (1.0 - ctc_weight) * ce + ctc_weight * ctc, ce, ctc, accuracy

    def _track(self, *values):
        for tracker, value in zip(self.trackers, values):
            tracker.update_state(value)
        return {m.name: m.result() for m in self.trackers}

    def train_step(self, batch):
        inputs, targets = batch
        loss_scaling = isinstance(self.optimizer,
                                  keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            values = self._compute_losses(inputs, targets, True)
            scaled = values[0] / tf.distribute.get_strategy(
            ).num_replicas_in_sync
            if loss_scaling:  # float16: keep small gradients representable
                scaled = self.optimizer.get_scaled_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_variables)
        if loss_scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._track(*values)

    def test_step(self, batch):
        inputs, targets = batch
        return self._track(*self._compute_losses(inputs, targets, False))


# --- Fault tolerance and the training loop --------------------------------

class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fails loudly, naming the step, instead of exporting a broken model."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            raise FloatingPointError(
                f"training loss became {loss} at step {step} (batch {batch} "
                "of its epoch); check the input data for NaN/inf features, "
                "or lower max_lr")


class EpochProgress(keras.callbacks.Callback):
    """One progress line per epoch (config.PROGRESS_LOGGER), instead of
    Keras' console output."""

    def __init__(self, epochs: int):
        super().__init__()
        self._epochs = epochs
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in logs.items()
                          if k in ("loss", "val_loss", "token_accuracy",
                                   "val_token_accuracy"))
        logging.getLogger(config.PROGRESS_LOGGER).info(
            "epoch %d/%d: %s (%.0f s)", epoch + 1, self._epochs, shown,
            time.time() - self._started)


class StepAndEpochBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that, given save_freq=N steps, also backs up at each
    epoch end, so a kill loses at most N steps and never a finished epoch."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            # The saved batch is the epoch's last: a resume starts the next.
            self._batches_count = 0
            self._backup(epoch=epoch)


def build_trainer(preset: config.Preset, total_steps: int,
                  strategy: Optional[tf.distribute.Strategy] = None
                  ) -> Seq2SeqTrainer:
    """A compiled trainer whose weights and optimiser slots already exist.

    Building everything up front lets BackupAndRestore restore the optimiser
    state in full when a run resumes, and logs the real parameter count.
    """
    train_cfg = preset.train
    precision = distribution.resolve_precision(train_cfg)
    jit_compile = distribution.resolve_jit_compile(train_cfg)
    with distribution.dtype_policy(precision):
        with (strategy or distribution.make_strategy()).scope():
            trainer = Seq2SeqTrainer(preset.model, train_cfg)
            schedule = WarmupCosine(train_cfg.max_lr, train_cfg.warmup_steps,
                                    total_steps, train_cfg.min_lr_ratio)
            optimizer = keras.optimizers.AdamW(
                learning_rate=schedule, weight_decay=train_cfg.weight_decay,
                global_clipnorm=train_cfg.clip_norm,
                # fit() swaps the average in when training ends.
                use_ema=train_cfg.ema_momentum > 0,
                ema_momentum=train_cfg.ema_momentum or 0.99)
            if precision == "mixed_float16":
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            trainer.compile(optimizer=optimizer, jit_compile=jit_compile)
            # Moonshine creates its weights when constructed; the optimiser
            # slots are created here.
            trainer.optimizer.build(trainer.trainable_variables)
    logging.info("%s: %d trainable parameters (%d in the exported model), "
                 "%s, XLA %s", preset.name, _n_params(trainer),
                 _n_params(trainer.moonshine), precision,
                 "on" if jit_compile else "off")
    return trainer


def _n_params(model: keras.Model) -> int:
    return sum(int(tf.size(v)) for v in model.trainable_variables)


def backup_dir_for(base_dir: str, preset: config.Preset,
                   inputs: List[str]) -> str:
    """A backup location stable across Trainer executions of the same job.

    TFX gives every execution a new model_run_dir; keying the backup by the
    preset and the input artifacts instead lets a re-run after a crash resume,
    while a changed model, schedule or new data starts fresh (decoding
    settings only shape the export, so they do not count).
    """
    trained = config.training_dict(preset)
    key = hashlib.sha256(json.dumps(
        [trained["model"], trained["train"], sorted(inputs)],
        sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(base_dir, f"{preset.name}-{key}")


def fit(trainer: Seq2SeqTrainer, train_ds: tf.data.Dataset,
        eval_ds: Optional[tf.data.Dataset], total_steps: int,
        steps_per_epoch: int, backup_dir: str, log_dir: Optional[str] = None,
        eval_steps: Optional[int] = None,
        callbacks: Optional[List[keras.callbacks.Callback]] = None,
        checkpoint_every_steps: int = 0,
        early_stopping_patience: int = 0) -> Dict[str, List[float]]:
    """Trains for total_steps, resuming from backup_dir if a backup is there.

    The training state (weights, optimiser, step) is backed up at each epoch
    end and, with checkpoint_every_steps, every that many steps.
    """
    epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    all_callbacks = [
        StopOnNonFiniteLoss(),
        EpochProgress(epochs),
        StepAndEpochBackup(backup_dir,
                           save_freq=checkpoint_every_steps or "epoch"),
    ]
    if early_stopping_patience and eval_ds is not None:
        all_callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=early_stopping_patience, verbose=1))
    if log_dir:
        all_callbacks.append(
            keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    history = trainer.fit(
        train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds, validation_steps=eval_steps,
        callbacks=all_callbacks + list(callbacks or []), verbose=0)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


# --- Reports and entry point ----------------------------------------------

def save_loss_curve(history: Dict[str, List[float]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    ax.plot(epochs, history.get("loss", []), label="train")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Moonshine training loss")
    ax.legend()
    fig.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def resolve_preset(custom_config: Optional[Dict]) -> config.Preset:
    preset = (custom_config or {}).get("preset", config.DEFAULT_PRESET)
    if isinstance(preset, dict):
        return config.preset_from_dict(preset)
    return config.get_preset(preset)


def steps_per_epoch(tf_transform_output, preset: config.Preset,
                    max_seconds: float) -> int:
    """Batches one pass of the training data fills, from Transform's counts
    of its input lengths (data.length_counts): no pass over the data."""
    plan = data.bucket_plan(preset.train.batch_size,
                            preset.train.batch_seconds,
                            preset.model.front_end, max_seconds)
    return max(1, data.count_batches(data.length_counts(tf_transform_output),
                                     *plan))


class InitialStep(keras.callbacks.Callback):
    """The optimiser step training began at: 0, or the step of the backup
    it resumed from (BackupAndRestore restores before this runs)."""

    step = 0

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())
        if self.step:
            logging.info("resumed from the backup at step %d", self.step)


# Where a non-chief worker's export goes, under the model run dir: every
# worker must save (saving can be collective), only the chief's is the model.
NON_CHIEF_MODEL_DIR = "non_chief_model"


def export_dir(fn_args, tf_config: Optional[str]) -> str:
    """The serving model dir on the chief; a scratch dir of its own on any
    other worker (<model_run_dir>/non_chief_model/<task>)."""
    if distribution.is_chief(tf_config):
        return fn_args.serving_model_dir
    return os.path.join(fn_args.model_run_dir, NON_CHIEF_MODEL_DIR,
                        distribution.task_name(tf_config))


def _eval_steps_per_worker(files: List[str], batch_size: int) -> int:
    """Evaluation steps that cover the eval split about once when every
    worker evaluates its repeated shard (the steps must be equal)."""
    paths = [f for p in files for f in tf.io.gfile.glob(p)]
    records = int(tf.data.TFRecordDataset(paths, compression_type="GZIP")
                  .reduce(0, lambda n, _: n + 1))
    return max(1, math.ceil(records / batch_size))


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    tf_config = os.environ.get("TF_CONFIG")
    custom_config = fn_args.custom_config or {}
    distribution.check_cluster_size(
        tf_config, custom_config.get(config.TRAINER_WORKERS_KEY))
    # MultiWorkerMirroredStrategy must exist before any other TF op runs.
    strategy = distribution.make_strategy()
    multi_worker = isinstance(strategy,
                              tf.distribute.MultiWorkerMirroredStrategy)
    preset = resolve_preset(custom_config)
    train_cfg = preset.train
    keras.utils.set_random_seed(train_cfg.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    # XLA compiles once per input shape: give it a few dozen, not hundreds.
    static_shapes = distribution.resolve_jit_compile(train_cfg)
    max_seconds = float(custom_config.get("max_audio_seconds",
                                          config.MAX_AUDIO_SECONDS))

    def dataset(files, training):
        def make(input_context=None):
            return data.make_dataset(
                files, tf_transform_output, preset, training=training,
                static_shapes=static_shapes, max_seconds=max_seconds,
                input_context=input_context)
        # Each worker reads its own shard of the files (models/data.py).
        return (strategy.distribute_datasets_from_function(make)
                if multi_worker else make())

    train_ds, eval_ds = (dataset(fn_args.train_files, True),
                         dataset(fn_args.eval_files, False))
    epoch_steps = steps_per_epoch(tf_transform_output, preset, max_seconds)
    total_steps = fn_args.train_steps or train_cfg.train_steps or (
        epoch_steps * train_cfg.epochs)
    epoch_steps = min(epoch_steps, total_steps)
    eval_steps = fn_args.eval_steps or train_cfg.eval_steps or None
    if multi_worker and eval_steps is None:
        eval_steps = _eval_steps_per_worker(fn_args.eval_files,
                                            train_cfg.batch_size)
    logging.info("training %s: %d steps of %d per epoch on %d worker(s)",
                 preset.name, total_steps, epoch_steps,
                 distribution.cluster_size(tf_config))

    trainer = build_trainer(preset, total_steps, strategy)
    # Fine-tuning starts from imported weights; a resumed backup overrides.
    weights.load_initial_weights(trainer.moonshine,
                                 custom_config.get("init_from"))
    run_dir = fn_args.model_run_dir
    backup_dir = backup_dir_for(
        custom_config.get("backup_dir") or os.path.join(run_dir, "backup"),
        preset, list(fn_args.train_files) + [fn_args.transform_output])
    initial = InitialStep()
    hist = fit(trainer, train_ds, eval_ds, total_steps, epoch_steps,
               backup_dir, log_dir=run_dir, eval_steps=eval_steps,
               callbacks=[initial],
               checkpoint_every_steps=train_cfg.checkpoint_every_steps,
               early_stopping_patience=train_cfg.early_stopping_patience)

    output_dir = export_dir(fn_args, tf_config)
    serving.save_trained(trainer.moonshine, preset, output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, serving.HISTORY_FILE),
                           "w") as f:
        json.dump({"preset": preset.name, "steps": total_steps,
                   "initial_step": initial.step,
                   "epochs": len(hist.get("loss", [])),
                   "workers": distribution.cluster_size(tf_config),
                   "task": distribution.task_name(tf_config),
                   "history": hist},
                  f, indent=2)
    save_loss_curve(hist, os.path.join(output_dir, serving.LOSS_CURVE_FILE))
    if multi_worker:
        # No worker leaves before the chief's model is written (the TFX
        # executor of each replica checks that the model exists).
        distribution.barrier(strategy)
