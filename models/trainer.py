"""The Trainer's `run_fn`: Transform output in, a serving SavedModel out.

Teacher-forced cross-entropy with label smoothing, plus a training-only CTC
loss on the encoder (hybrid CTC/attention as in ESPnet) that makes the
encoder align audio and tokens early; the exported model is the plain
Moonshine encoder-decoder.
"""

from __future__ import annotations

import hashlib
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
from models import weights

# Length buckets grow geometrically, so padding inside a batch stays under
# 1 - 1/BUCKET_RATIO whatever the utterance length (as Lhotse's and icefall's
# duration buckets do), from the shortest clip worth a bucket to the longest
# utterance ingestion lets through.
BUCKET_RATIO = 1.1
MIN_BUCKET_SECONDS = 1.0
SHUFFLE_BUFFER = 2048
LOSS_CURVE_FILE = "loss_curve.png"
HISTORY_FILE = "history.json"


# --- Input pipeline -------------------------------------------------------

def _parse(feature_spec: Dict, n_mels: int, frontend: str = "log_mel"):
    """Transformed example -> (model inputs, targets); the inputs are
    log-mel frames [frames, n_mels] or, for the waveform front end, the
    samples [samples], with their length in the same unit."""
    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, feature_spec)
        if frontend == "waveform":
            inputs = tf.sparse.to_dense(ex[config.WAVEFORM_KEY])
            lengths = ex[config.NUM_SAMPLES_KEY]
        else:
            inputs = tf.reshape(tf.sparse.to_dense(ex[config.LOG_MEL_KEY]),
                                [-1, n_mels])
            lengths = ex[config.NUM_FRAMES_KEY]
        tokens = tf.cast(tf.sparse.to_dense(ex[config.TOKENS_KEY]), tf.int32)
        features = {
            "features": inputs,
            "lengths": tf.cast(lengths, tf.int32),
            "tokens": tokens[:-1],
        }
        return features, tokens[1:]
    return parse


def lengths_per_second(frontend: str = "log_mel") -> float:
    """Units of a model input's length per second: frames or samples."""
    if frontend == "waveform":
        return float(config.SAMPLE_RATE)
    return 1.0 / config.HOP_SECONDS


def bucket_boundaries(max_seconds: float = config.MAX_AUDIO_SECONDS,
                      per_second: float = lengths_per_second()) -> List[int]:
    """Length bucket edges from MIN_BUCKET_SECONDS to max_seconds, in
    frames (default) or `per_second` units."""
    edge = MIN_BUCKET_SECONDS * per_second
    edges = []
    while edge < max_seconds * per_second:
        edges.append(int(round(edge)))
        edge *= BUCKET_RATIO
    return edges


def batch_by_length(ds: tf.data.Dataset, batch_size: int,
                    n_mels: int, frontend: str = "log_mel"
                    ) -> tf.data.Dataset:
    """Padded batches of utterances of similar length (bucketed)."""
    boundaries = bucket_boundaries(per_second=lengths_per_second(frontend))
    feature_shape = [None] if frontend == "waveform" else [None, n_mels]
    return ds.bucket_by_sequence_length(
        element_length_func=lambda x, y: x["lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padded_shapes=({"features": feature_shape, "lengths": [],
                        "tokens": [None]}, [None]),
        padding_values=({"features": 0.0, "lengths": 0,
                         "tokens": config.PAD_ID}, config.PAD_ID),
        drop_remainder=False)


def make_dataset(file_patterns: List[str], tf_transform_output,
                 preset: config.Preset, training: bool,
                 batch_size: Optional[int] = None) -> tf.data.Dataset:
    """Bucketed, padded batches of (model inputs, target tokens).

    Training data repeats before bucketing so that no bucket is flushed half
    full at each epoch boundary.
    """
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no transformed examples match {file_patterns}")
    batch_size = batch_size or preset.train.batch_size
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if training:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=preset.train.seed,
                        reshuffle_each_iteration=True).repeat()
    model = preset.model
    ds = ds.map(_parse(spec, model.n_mels, model.frontend),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = batch_by_length(ds, batch_size, model.n_mels, model.frontend)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- SpecAugment ------------------------------------------------------------

def _band_masks(n_masks: int, extent, max_fraction: float, size: int,
                batch) -> tf.Tensor:
    """[batch, size] True where any of n_masks random bands covers a cell.

    extent is each example's own size (scalar or [batch]); a band's width is
    uniform in [0, max_fraction * extent] and it lies wholly inside the extent.
    """
    extent = tf.broadcast_to(tf.cast(extent, tf.float32), [batch])
    positions = tf.range(size)[tf.newaxis, :]
    covered = tf.zeros([batch, size], tf.bool)
    for _ in range(n_masks):
        width = tf.floor(tf.random.uniform([batch])
                         * (max_fraction * extent + 1.0))
        start = tf.floor(tf.random.uniform([batch])
                         * tf.maximum(extent - width + 1.0, 1.0))
        start, width = tf.cast(start, tf.int32), tf.cast(width, tf.int32)
        covered |= ((positions >= start[:, tf.newaxis])
                    & (positions < (start + width)[:, tf.newaxis]))
    return covered


def spec_augment(features: tf.Tensor, lengths: tf.Tensor,
                 train_cfg: config.TrainConfig) -> tf.Tensor:
    """Frequency and time masks over a padded [batch, frames, mels] batch.

    Masked cells become 0, the training mean of the normalised log-mel; time
    masks stay inside each utterance's own frames.
    """
    batch, n_frames = tf.shape(features)[0], tf.shape(features)[1]
    n_mels = features.shape[-1]
    keep = tf.ones_like(features, tf.bool)
    if train_cfg.freq_masks:
        keep &= ~_band_masks(train_cfg.freq_masks, n_mels,
                             train_cfg.freq_mask_fraction, n_mels,
                             batch)[:, tf.newaxis, :]
    if train_cfg.time_masks:
        keep &= ~_band_masks(train_cfg.time_masks, lengths,
                             train_cfg.time_mask_fraction, n_frames,
                             batch)[:, :, tf.newaxis]
    return tf.where(keep, features, tf.zeros_like(features))


def _interpolate(features: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Linear interpolation of [batch, time, mels] at fractional mel positions
    [batch, mels]."""
    n_mels = features.shape[-1]
    low = tf.clip_by_value(tf.floor(positions), 0.0, n_mels - 1.0)
    frac = (positions - low)[:, tf.newaxis, :]
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, n_mels - 1)
    take = lambda idx: tf.gather(features, idx, axis=2, batch_dims=1)  # noqa
    return take(low) * (1.0 - frac) + take(high) * frac


def perturb(features: tf.Tensor, lengths: tf.Tensor,
            train_cfg: config.TrainConfig):
    """Random time stretch (per batch) and mel-axis warp (per utterance).

    Returns the perturbed features and their new lengths in frames.
    """
    if train_cfg.time_stretch:
        rate = tf.random.uniform([], 1.0 - train_cfg.time_stretch,
                                 1.0 + train_cfg.time_stretch)
        n_frames = tf.cast(tf.shape(features)[1], tf.float32)
        new_frames = tf.maximum(tf.cast(tf.round(n_frames * rate), tf.int32), 1)
        features = tf.image.resize(features[..., tf.newaxis],
                                   [new_frames, features.shape[-1]])[..., 0]
        lengths = tf.minimum(
            tf.cast(tf.round(tf.cast(lengths, tf.float32) * rate), tf.int32),
            new_frames)
    if train_cfg.freq_warp:
        batch, n_mels = tf.shape(features)[0], features.shape[-1]
        warp = tf.random.uniform([batch, 1], 1.0 - train_cfg.freq_warp,
                                 1.0 + train_cfg.freq_warp)
        # A warp above 1 moves formants up, as a shorter vocal tract does.
        positions = tf.range(n_mels, dtype=tf.float32)[tf.newaxis, :] / warp
        features = _interpolate(features, positions)
    return features, lengths


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
                 train_config: config.TrainConfig, **kwargs):
        super().__init__(**kwargs)
        self.moonshine = moonshine.Moonshine(model_config)
        self.model_config = model_config
        self.train_config = train_config
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
        features, lengths = inputs["features"], inputs["lengths"]
        # SpecAugment, time stretch and mel warp act on log-mel cells: the
        # waveform front end trains on the audio as ingested, unaugmented.
        if training and self.model_config.frontend == "log_mel":
            features, lengths = perturb(features, lengths, self.train_config)
            features = spec_augment(features, lengths, self.train_config)
        encoded, encoded_lengths = self.moonshine.encode(
            features, lengths, training=training)
        logits = self.moonshine.decode(inputs["tokens"], encoded,
                                       encoded_lengths, training=training)
        mask = tf.cast(tf.not_equal(targets, config.PAD_ID), tf.float32)
        n_tokens = tf.maximum(tf.reduce_sum(mask), 1.0)
        one_hot = tf.one_hot(targets, self.vocab_size)
        smoothing = self.train_config.label_smoothing
        smooth = one_hot * (1.0 - smoothing) + smoothing / self.vocab_size
        ce = tf.nn.softmax_cross_entropy_with_logits(smooth, logits)
        ce = tf.reduce_sum(ce * mask) / n_tokens
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                   targets), tf.float32)
        accuracy = tf.reduce_sum(correct * mask) / n_tokens

        ctc = tf.constant(0.0)
        ctc_weight = self.train_config.ctc_weight
        if ctc_weight > 0:
            # CTC labels are the tokens alone: no <s>, no </s>.
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
        loss = (1.0 - ctc_weight) * ce + ctc_weight * ctc
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

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            raise FloatingPointError(
                f"training loss became {loss} at step {step} (batch {batch} "
                "of its epoch); check the input data for NaN/inf features, "
                "or lower max_lr")


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


def build_trainer(preset: config.Preset, total_steps: int,
                  strategy: Optional[tf.distribute.Strategy] = None
                  ) -> Seq2SeqTrainer:
    """A compiled trainer whose weights and optimiser slots already exist.

    Building everything up front lets BackupAndRestore restore the optimiser
    state in full when a run resumes, and logs the real parameter count.
    """
    train_cfg = preset.train
    with (strategy or _strategy()).scope():
        trainer = Seq2SeqTrainer(preset.model, train_cfg)
        schedule = WarmupCosine(train_cfg.max_lr, train_cfg.warmup_steps,
                                total_steps, train_cfg.min_lr_ratio)
        trainer.compile(optimizer=keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=train_cfg.weight_decay,
            global_clipnorm=train_cfg.clip_norm,
            # fit() swaps the average in when training ends.
            use_ema=train_cfg.ema_momentum > 0,
            ema_momentum=train_cfg.ema_momentum or 0.99))
        # Moonshine creates its weights when constructed; the CTC head and
        # the optimiser slots are created here.
        trainer.ctc_head.build([None, preset.model.dim])
        trainer.optimizer.build(trainer.trainable_variables)
    logging.info("%s: %d trainable parameters (%d in the exported model)",
                 preset.name, _n_params(trainer), _n_params(trainer.moonshine))
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
    trained = config.preset_to_dict(preset)
    key = hashlib.sha256(json.dumps(
        [trained["model"], trained["train"], sorted(inputs)],
        sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(base_dir, f"{preset.name}-{key}")


def fit(trainer: Seq2SeqTrainer, train_ds: tf.data.Dataset,
        eval_ds: Optional[tf.data.Dataset], total_steps: int,
        steps_per_epoch: int, backup_dir: str, log_dir: Optional[str] = None,
        eval_steps: Optional[int] = None,
        callbacks: Optional[List[keras.callbacks.Callback]] = None,
        save_freq="epoch") -> Dict[str, List[float]]:
    """Trains for total_steps, resuming from backup_dir if a backup is there."""
    epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    all_callbacks = [
        StopOnNonFiniteLoss(),
        keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq),
    ]
    if log_dir:
        all_callbacks.append(
            keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    history = trainer.fit(
        train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
        validation_data=eval_ds, validation_steps=eval_steps,
        callbacks=all_callbacks + list(callbacks or []), verbose=2)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    custom_config = fn_args.custom_config or {}
    preset = resolve_preset(custom_config)
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
    steps_per_epoch = min(steps_per_epoch, total_steps)
    eval_steps = fn_args.eval_steps or train_cfg.eval_steps or None
    logging.info("training %s: %d examples, %d steps of %d per epoch",
                 preset.name, n_train, total_steps, steps_per_epoch)

    trainer = build_trainer(preset, total_steps)
    # Fine-tuning starts from imported weights; a resumed backup overrides.
    weights.load_initial_weights(trainer.moonshine,
                                 custom_config.get("init_from"))
    run_dir = fn_args.model_run_dir
    backup_base = custom_config.get("backup_dir") or os.path.join(
        run_dir, "backup")
    backup_dir = backup_dir_for(
        backup_base, preset,
        list(fn_args.train_files) + [fn_args.transform_output])
    hist = fit(trainer, train_ds, eval_ds, total_steps, steps_per_epoch,
               backup_dir, log_dir=run_dir, eval_steps=eval_steps)

    serving.export_serving_model(trainer.moonshine, tf_transform_output,
                                 preset, fn_args.serving_model_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.serving_model_dir,
                                        HISTORY_FILE), "w") as f:
        json.dump({"preset": preset.name, "steps": total_steps,
                   "epochs": len(hist.get("loss", [])), "history": hist},
                  f, indent=2)
    save_loss_curve(hist, os.path.join(fn_args.serving_model_dir,
                                       LOSS_CURVE_FILE))
