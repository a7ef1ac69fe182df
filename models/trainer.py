"""The Trainer's `run_fn`: Transform output in, a serving SavedModel out.

Teacher-forced cross-entropy with label smoothing, plus a training-only CTC
loss on the encoder (hybrid CTC/attention as in ESPnet) that makes the
encoder align audio and tokens early; the exported model is the plain
Moonshine encoder-decoder.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import math
import os
from typing import Dict, List, Optional, Tuple

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
# Token sequences pad to a multiple of this under static_shapes (XLA).
TOKEN_PAD_MULTIPLE = 16
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


def bucket_batch_sizes(boundaries: List[int], batch_size: int,
                       batch_seconds: float = 0.0,
                       per_second: float = lengths_per_second(),
                       max_seconds: float = config.MAX_AUDIO_SECONDS
                       ) -> List[int]:
    """Utterances per batch for each bucket: batch_size, or as many as fit
    in batch_seconds of padded audio (at least one)."""
    if not batch_seconds:
        return [batch_size] * (len(boundaries) + 1)
    # A bucket's batch pads to its longest member, below its upper edge.
    uppers = [b / per_second for b in boundaries] + [max_seconds]
    return [max(1, int(batch_seconds // upper)) for upper in uppers]


def bucket_plan(batch_size: int, batch_seconds: float = 0.0,
                frontend: str = "log_mel",
                max_seconds: float = config.MAX_AUDIO_SECONDS
                ) -> Tuple[List[int], List[int]]:
    """(bucket edges, utterances per batch of each bucket) in the front
    end's length unit, up to the longest utterance ingestion lets through."""
    per_second = lengths_per_second(frontend)
    boundaries = bucket_boundaries(max_seconds, per_second)
    return boundaries, bucket_batch_sizes(boundaries, batch_size,
                                          batch_seconds, per_second,
                                          max_seconds)


def count_batches(lengths: List[int], boundaries: List[int],
                  batch_sizes: List[int]) -> int:
    """Full batches one pass of utterances of these lengths fills when
    bucketed (training repeats the data before bucketing, so no batch is
    partial): len(lengths) / batch_size when every bucket has that size."""
    counts = [0] * len(batch_sizes)
    for n in lengths:
        counts[bisect.bisect_right(boundaries, n)] += 1
    return math.ceil(round(sum(c / size for c, size in zip(counts, batch_sizes)), 6))


def batch_by_length(ds: tf.data.Dataset, batch_size: int,
                    n_mels: int, frontend: str = "log_mel",
                    batch_seconds: float = 0.0,
                    static_shapes: bool = False,
                    max_seconds: float = config.MAX_AUDIO_SECONDS
                    ) -> tf.data.Dataset:
    """Padded batches of utterances of similar length (bucketed).

    static_shapes pads each batch to its bucket's upper edge and the tokens
    to a multiple of TOKEN_PAD_MULTIPLE, so an XLA-compiled step sees a few
    dozen shapes instead of one per batch; max_seconds is then the longest
    utterance ingestion let through (the last bucket's edge).
    """
    boundaries, sizes = bucket_plan(batch_size, batch_seconds, frontend,
                                    max_seconds)
    if static_shapes:
        boundaries = boundaries + [
            int(max_seconds * lengths_per_second(frontend)) + 1]
        sizes = sizes + sizes[-1:]
    feature_shape = [None] if frontend == "waveform" else [None, n_mels]
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda x, y: x["lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=sizes,
        padded_shapes=({"features": feature_shape, "lengths": [],
                        "tokens": [None]}, [None]),
        padding_values=({"features": 0.0, "lengths": 0,
                         "tokens": config.PAD_ID}, config.PAD_ID),
        pad_to_bucket_boundary=static_shapes,
        drop_remainder=False)
    return ds.map(_pad_tokens) if static_shapes else ds


def _pad_tokens(inputs, targets):
    """Tokens and targets padded with PAD to a multiple of
    TOKEN_PAD_MULTIPLE (masked out of every loss)."""
    length = tf.shape(targets)[1]
    pad = [[0, 0], [0, -length % TOKEN_PAD_MULTIPLE]]
    inputs = dict(inputs, tokens=tf.pad(inputs["tokens"], pad,
                                        constant_values=config.PAD_ID))
    return inputs, tf.pad(targets, pad, constant_values=config.PAD_ID)


def make_dataset(file_patterns: List[str], tf_transform_output,
                 preset: config.Preset, training: bool,
                 batch_size: Optional[int] = None,
                 static_shapes: bool = False,
                 max_seconds: float = config.MAX_AUDIO_SECONDS
                 ) -> tf.data.Dataset:
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
    ds = batch_by_length(ds, batch_size, model.n_mels, model.frontend,
                         preset.train.batch_seconds, static_shapes,
                         max_seconds)
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
        # Losses in float32 whatever the compute dtype (mixed precision).
        logits = tf.cast(self.moonshine.decode(
            inputs["tokens"], encoded, encoded_lengths, training=training),
            tf.float32)
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
            ctc_logits = tf.cast(self.ctc_head(encoded), tf.float32)
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
            loss_scaling = isinstance(self.optimizer,
                                      keras.mixed_precision.LossScaleOptimizer)
            if loss_scaling:  # float16: keep small gradients representable
                scaled = self.optimizer.get_scaled_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_variables)
        if loss_scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
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


class StepAndEpochBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that, given save_freq=N steps, also backs up at each
    epoch end, so a kill loses at most N steps and never a finished epoch."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            # The saved batch is the epoch's last: a resume starts the next.
            self._batches_count = 0
            self._backup(epoch=epoch)


def _example_lengths(file_patterns: List[str], tf_transform_output,
                     frontend: str) -> List[int]:
    """Each transformed example's input length (frames or samples), read
    without decoding its features."""
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    key = (config.NUM_SAMPLES_KEY if frontend == "waveform"
           else config.NUM_FRAMES_KEY)
    spec = {key: tf_transform_output.transformed_feature_spec()[key]}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(
        lambda x: tf.reshape(tf.io.parse_single_example(x, spec)[key], [-1]))
    return [int(n[0]) for n in ds.as_numpy_iterator()]


def strategy_kind(tf_config: Optional[str], n_gpus: int) -> str:
    """'multi_worker' when TF_CONFIG names several workers (the TFX Trainer
    on Vertex AI or a TFJob sets it per replica), 'mirrored' over several
    local GPUs, else 'default'."""
    cluster = json.loads(tf_config or "{}").get("cluster", {})
    if sum(len(cluster.get(k, [])) for k in ("chief", "worker")) > 1:
        return "multi_worker"
    return "mirrored" if n_gpus > 1 else "default"


def is_chief(tf_config: Optional[str]) -> bool:
    """Whether this replica writes the model (the chief, or worker 0 of a
    cluster without one); every other replica exports to a scratch dir."""
    parsed = json.loads(tf_config or "{}")
    task = parsed.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return (task.get("type") == "worker" and int(task.get("index", 0)) == 0
            and "chief" not in parsed.get("cluster", {}))


def _strategy() -> tf.distribute.Strategy:
    kind = strategy_kind(os.environ.get("TF_CONFIG"),
                         len(tf.config.list_physical_devices("GPU")))
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def gpu_capabilities() -> List[Tuple[int, int]]:
    """CUDA compute capability of each local GPU ([] on a CPU host)."""
    return [tuple(tf.config.experimental.get_device_details(g).get(
        "compute_capability", (0, 0)))
        for g in tf.config.list_physical_devices("GPU")]


def resolve_precision(train_config: config.TrainConfig,
                      capabilities: Optional[List[Tuple[int, int]]] = None
                      ) -> str:
    """The Keras dtype policy TrainConfig.precision asks for on this host
    (capabilities: gpu_capabilities(), by default queried)."""
    if train_config.precision != "auto":
        return train_config.precision
    if capabilities is None:
        capabilities = gpu_capabilities()
    if not capabilities:
        return "float32"
    # bfloat16 needs Ampere (8.0) or newer, and no loss scaling.
    return ("mixed_bfloat16" if min(capabilities) >= (8, 0)
            else "mixed_float16")


def resolve_jit_compile(train_config: config.TrainConfig,
                        capabilities: Optional[List[Tuple[int, int]]] = None
                        ) -> bool:
    """TrainConfig.jit_compile, or XLA exactly when there is a GPU."""
    if train_config.jit_compile is not None:
        return train_config.jit_compile
    if capabilities is None:
        capabilities = gpu_capabilities()
    return bool(capabilities)


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


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Keras' global dtype policy set to `name` inside the block only:
    layers take the policy in force when they are constructed."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_trainer(preset: config.Preset, total_steps: int,
                  strategy: Optional[tf.distribute.Strategy] = None
                  ) -> Seq2SeqTrainer:
    """A compiled trainer whose weights and optimiser slots already exist.

    Building everything up front lets BackupAndRestore restore the optimiser
    state in full when a run resumes, and logs the real parameter count.
    """
    train_cfg = preset.train
    precision = resolve_precision(train_cfg)
    jit_compile = resolve_jit_compile(train_cfg)
    with _dtype_policy(precision):
        with (strategy or _strategy()).scope():
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
            # Moonshine creates its weights when constructed; the CTC head
            # and the optimiser slots are created here.
            trainer.ctc_head.build([None, preset.model.dim])
            trainer.optimizer.build(trainer.trainable_variables)
    logging.info("%s: %d trainable parameters (%d in the exported model), "
                 "%s, XLA %s", preset.name, _n_params(trainer),
                 _n_params(trainer.moonshine), precision,
                 "on" if jit_compile else "off")
    return trainer


def float32_model(model: moonshine.Moonshine) -> moonshine.Moonshine:
    """The model itself if it computes in float32, else a float32 copy with
    its weights (variables are float32 under mixed precision too): the
    serving graph runs in float32 on any device."""
    if model.compute_dtype == "float32":
        return model
    with _dtype_policy("float32"):
        copy = moonshine.Moonshine(model.model_config)
    copy.set_weights(model.get_weights())
    return copy


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
        checkpoint_every_steps: int = 0,
        early_stopping_patience: int = 0) -> Dict[str, List[float]]:
    """Trains for total_steps, resuming from backup_dir if a backup is there.

    The training state (weights, optimiser, step) is backed up at each epoch
    end and, with checkpoint_every_steps, every that many steps.
    """
    epochs = max(1, math.ceil(total_steps / steps_per_epoch))
    all_callbacks = [
        StopOnNonFiniteLoss(),
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
        callbacks=all_callbacks + list(callbacks or []), verbose=2)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    # MultiWorkerMirroredStrategy must exist before any other TF op runs.
    strategy = _strategy()
    custom_config = fn_args.custom_config or {}
    preset = resolve_preset(custom_config)
    train_cfg = preset.train
    keras.utils.set_random_seed(train_cfg.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    # XLA compiles once per input shape: give it a few dozen, not hundreds.
    static_shapes = resolve_jit_compile(train_cfg)
    max_seconds = float(custom_config.get("max_audio_seconds",
                                          config.MAX_AUDIO_SECONDS))
    train_ds = make_dataset(fn_args.train_files, tf_transform_output, preset,
                            training=True, static_shapes=static_shapes,
                            max_seconds=max_seconds)
    eval_ds = make_dataset(fn_args.eval_files, tf_transform_output, preset,
                           training=False, static_shapes=static_shapes,
                           max_seconds=max_seconds)
    lengths = _example_lengths(fn_args.train_files, tf_transform_output,
                               preset.model.frontend)
    # An epoch is one pass's worth of the batches make_dataset forms (the
    # training data repeats).
    steps_per_epoch = max(1, count_batches(lengths, *bucket_plan(
        train_cfg.batch_size, train_cfg.batch_seconds, preset.model.frontend,
        max_seconds)))
    per_second = lengths_per_second(preset.model.frontend)
    total_steps = fn_args.train_steps or train_cfg.train_steps or (
        steps_per_epoch * train_cfg.epochs)
    steps_per_epoch = min(steps_per_epoch, total_steps)
    eval_steps = fn_args.eval_steps or train_cfg.eval_steps or None
    logging.info("training %s: %d examples (%.2f h), %d steps of %d per "
                 "epoch", preset.name, len(lengths),
                 sum(lengths) / per_second / 3600, total_steps,
                 steps_per_epoch)

    trainer = build_trainer(preset, total_steps, strategy)
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
               backup_dir, log_dir=run_dir, eval_steps=eval_steps,
               checkpoint_every_steps=train_cfg.checkpoint_every_steps,
               early_stopping_patience=train_cfg.early_stopping_patience)

    serving_model_dir = fn_args.serving_model_dir
    if not is_chief(os.environ.get("TF_CONFIG")):
        # Every replica must run the export (it is collective); only the
        # chief's lands where the Trainer's output artifact points.
        serving_model_dir = os.path.join(run_dir, "non_chief_export")
    serving.export_serving_model(float32_model(trainer.moonshine),
                                 tf_transform_output, preset,
                                 serving_model_dir)
    with tf.io.gfile.GFile(os.path.join(serving_model_dir,
                                        HISTORY_FILE), "w") as f:
        json.dump({"preset": preset.name, "steps": total_steps,
                   "epochs": len(hist.get("loss", [])), "history": hist},
                  f, indent=2)
    save_loss_curve(hist, os.path.join(serving_model_dir, LOSS_CURVE_FILE))
