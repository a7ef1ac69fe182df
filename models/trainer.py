"""The Trainer's `run_fn`: Transform output in, a serving SavedModel out.

Teacher-forced cross-entropy with label smoothing, plus a training-only CTC
loss on the encoder (hybrid CTC/attention as in ESPnet) that makes the
encoder align audio and characters early; the exported model is the plain
Moonshine encoder-decoder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from models import config
from models import moonshine
from models import serving

CTC_WEIGHT = 0.3
# Frame-count bucket edges (10 ms frames): most LibriSpeech utterances are
# 2-16 s, the embedded corpus 1.5-5 s.
BUCKET_BOUNDARIES = (200, 300, 400, 550, 800, 1100, 1600)
SHUFFLE_BUFFER = 2048
LOSS_CURVE_FILE = "loss_curve.png"
HISTORY_FILE = "history.json"


# --- Input pipeline -------------------------------------------------------

def _parse(feature_spec: Dict, n_mels: int):
    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, feature_spec)
        log_mel = tf.reshape(tf.sparse.to_dense(ex[config.LOG_MEL_KEY]),
                             [-1, n_mels])
        tokens = tf.cast(tf.sparse.to_dense(ex[config.TOKENS_KEY]), tf.int32)
        features = {
            "features": log_mel,
            "lengths": tf.cast(ex[config.NUM_FRAMES_KEY], tf.int32),
            "tokens": tokens[:-1],
        }
        return features, tokens[1:]
    return parse


def make_dataset(file_patterns: List[str], tf_transform_output,
                 preset: config.Preset, training: bool,
                 batch_size: Optional[int] = None) -> tf.data.Dataset:
    """Bucketed, padded batches of (model inputs, target tokens)."""
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no transformed examples match {file_patterns}")
    batch_size = batch_size or preset.train.batch_size
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if training:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=preset.train.seed,
                        reshuffle_each_iteration=True)
    ds = ds.map(_parse(spec, preset.model.n_mels),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    boundaries = list(BUCKET_BOUNDARIES)
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda x, y: x["lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padded_shapes=({"features": [None, preset.model.n_mels],
                        "lengths": [], "tokens": [None]}, [None]),
        padding_values=({"features": 0.0, "lengths": 0,
                         "tokens": config.PAD_ID}, config.PAD_ID),
        drop_remainder=False)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- Model, loss, schedule ------------------------------------------------

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
                 label_smoothing: float, ctc_weight: float = CTC_WEIGHT,
                 **kwargs):
        super().__init__(**kwargs)
        self.moonshine = moonshine.Moonshine(model_config)
        self.label_smoothing = label_smoothing
        self.ctc_weight = ctc_weight
        self.vocab_size = model_config.vocab_size
        # The CTC blank reuses PAD's id: PAD never appears inside a label.
        self.ctc_head = keras.layers.Dense(model_config.vocab_size,
                                           name="ctc_head")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.ctc_tracker = keras.metrics.Mean(name="ctc_loss")
        self.acc_tracker = keras.metrics.Mean(name="token_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.ce_tracker, self.ctc_tracker,
                self.acc_tracker]

    def call(self, inputs, training=False):
        return self.moonshine(inputs, training=training)

    def _compute_losses(self, inputs, targets, training):
        encoded, encoded_lengths = self.moonshine.encode(
            inputs["features"], inputs["lengths"], training=training)
        logits = self.moonshine.decode(inputs["tokens"], encoded,
                                       encoded_lengths, training=training)
        mask = tf.cast(tf.not_equal(targets, config.PAD_ID), tf.float32)
        n_tokens = tf.maximum(tf.reduce_sum(mask), 1.0)
        one_hot = tf.one_hot(targets, self.vocab_size)
        smooth = (one_hot * (1.0 - self.label_smoothing)
                  + self.label_smoothing / self.vocab_size)
        ce = tf.nn.softmax_cross_entropy_with_logits(smooth, logits)
        ce = tf.reduce_sum(ce * mask) / n_tokens
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                   targets), tf.float32)
        accuracy = tf.reduce_sum(correct * mask) / n_tokens

        ctc = tf.constant(0.0)
        if self.ctc_weight > 0:
            # CTC labels are the characters alone: no <s>, no </s>.
            labels = tf.where(tf.equal(targets, config.EOS_ID),
                              config.PAD_ID, targets)
            label_lengths = tf.reduce_sum(
                tf.cast(tf.not_equal(labels, config.PAD_ID), tf.int32), -1)
            ctc_logits = self.ctc_head(encoded)
            per_example = tf.nn.ctc_loss(
                labels=labels, logits=ctc_logits, label_length=label_lengths,
                logit_length=encoded_lengths, logits_time_major=False,
                blank_index=config.PAD_ID)
            # An utterance too fast for the encoder's frame rate has no CTC
            # alignment (infinite loss): it still trains through the decoder.
            feasible = tf.math.is_finite(per_example)
            per_example = tf.where(feasible, per_example, 0.0)
            ctc = tf.reduce_sum(per_example) / tf.maximum(
                tf.reduce_sum(tf.cast(label_lengths, tf.float32)
                              * tf.cast(feasible, tf.float32)), 1.0)
        loss = (1.0 - self.ctc_weight) * ce + self.ctc_weight * ctc
        return loss, ce, ctc, accuracy

    def _track(self, loss, ce, ctc, accuracy):
        self.loss_tracker.update_state(loss)
        self.ce_tracker.update_state(ce)
        self.ctc_tracker.update_state(ctc)
        self.acc_tracker.update_state(accuracy)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        inputs, targets = data
        with tf.GradientTape() as tape:
            loss, ce, ctc, accuracy = self._compute_losses(inputs, targets, True)
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._track(loss, ce, ctc, accuracy)

    def test_step(self, data):
        inputs, targets = data
        return self._track(*self._compute_losses(inputs, targets, False))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fails loudly, naming the step, instead of exporting a broken model."""

    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"training loss became {loss} at step {self.step} "
                f"(epoch batch {batch}); lower max_lr or check the input data")


def _count_examples(file_patterns: List[str]) -> int:
    files = [f for p in file_patterns for f in tf.io.gfile.glob(p)]
    return sum(1 for _ in tf.data.TFRecordDataset(files,
                                                  compression_type="GZIP"))


def _strategy() -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
    custom_config = custom_config or {}
    preset = custom_config.get("preset", "demo")
    if isinstance(preset, dict):
        return config.preset_from_dict(preset)
    return config.get_preset(preset)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    preset = resolve_preset(fn_args.custom_config)
    train_cfg = preset.train
    keras.utils.set_random_seed(train_cfg.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    train_ds = make_dataset(fn_args.train_files, tf_transform_output, preset,
                            training=True)
    eval_ds = make_dataset(fn_args.eval_files, tf_transform_output, preset,
                           training=False)
    n_train = _count_examples(fn_args.train_files)
    steps_per_epoch = max(1, math.ceil(n_train / train_cfg.batch_size))
    total_steps = fn_args.train_steps or train_cfg.train_steps or (
        steps_per_epoch * train_cfg.epochs)
    epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    steps_per_epoch = min(steps_per_epoch, total_steps)
    eval_steps = fn_args.eval_steps or train_cfg.eval_steps or None
    logging.info("training %s: %d examples, %d steps (%d epochs x %d)",
                 preset.name, n_train, total_steps, epochs, steps_per_epoch)

    with _strategy().scope():
        trainer = Seq2SeqTrainer(preset.model, train_cfg.label_smoothing)
        schedule = WarmupCosine(train_cfg.max_lr, train_cfg.warmup_steps,
                                total_steps, train_cfg.min_lr_ratio)
        trainer.compile(optimizer=keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=train_cfg.weight_decay,
            global_clipnorm=train_cfg.clip_norm))

    run_dir = fn_args.model_run_dir
    callbacks = [
        StopOnNonFiniteLoss(),
        keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch"),
        # Resumes from the newest backup when the Trainer is re-run after a
        # crash, instead of starting over.
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
    ]
    history = trainer.fit(
        train_ds.repeat(), epochs=epochs, steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds, validation_steps=eval_steps,
        callbacks=callbacks, verbose=2)

    serving.export_serving_model(trainer.moonshine, tf_transform_output,
                                 preset, fn_args.serving_model_dir)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    with tf.io.gfile.GFile(os.path.join(fn_args.serving_model_dir,
                                        HISTORY_FILE), "w") as f:
        json.dump({"preset": preset.name, "steps": total_steps,
                   "epochs": epochs, "history": hist}, f, indent=2)
    save_loss_curve(hist, os.path.join(fn_args.serving_model_dir,
                                       LOSS_CURVE_FILE))
