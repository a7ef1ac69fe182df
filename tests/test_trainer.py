"""The Trainer's input pipeline, augmentation and fault handling.

Padding is measured on the embedded corpus's real utterance lengths; resume
and NaN handling run the real `fit` on a small model.
"""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
import tf_keras as keras

from conftest import EMBEDDED_CORPUS
from models import config, features, trainer

N_MELS = config.N_MELS


def _tiny_preset(**train_overrides):
    preset = config.get_preset("ci")
    return dataclasses.replace(
        preset, train=dataclasses.replace(preset.train, **train_overrides))


# --- Bucketing ----------------------------------------------------------------

def _corpus_frame_counts(split_prefix="train"):
    flacs = sorted(glob.glob(os.path.join(
        EMBEDDED_CORPUS, f"{split_prefix}*", "*", "*", "*.flac")))
    assert flacs, EMBEDDED_CORPUS
    samples = [sf.info(f).frames for f in flacs]
    return [int(n) for n in features.frames_for_samples(np.array(samples))]


def _length_only_dataset(frame_counts, seed):
    """Elements shaped like the Trainer's, with the corpus's real lengths."""
    def gen():
        order = np.random.default_rng(seed).permutation(len(frame_counts))
        for i in order:
            n = frame_counts[i]
            yield ({"features": np.zeros([n, N_MELS], np.float32),
                    "lengths": np.int32(n),
                    "tokens": np.ones([3], np.int32)},
                   np.ones([3], np.int32))
    spec = ({"features": tf.TensorSpec([None, N_MELS], tf.float32),
             "lengths": tf.TensorSpec([], tf.int32),
             "tokens": tf.TensorSpec([None], tf.int32)},
            tf.TensorSpec([None], tf.int32))
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _padding_fraction(batches):
    real = padded = 0
    for inputs, _ in batches:
        real += int(tf.reduce_sum(inputs["lengths"]))
        padded += int(tf.size(inputs["lengths"])) * int(
            tf.shape(inputs["features"])[1])
    return 1.0 - real / padded


def test_bucketed_batches_pad_under_15_percent_on_the_embedded_corpus():
    frame_counts = _corpus_frame_counts()
    batch_size = config.get_preset("demo").train.batch_size
    ds = _length_only_dataset(frame_counts, seed=0)
    bucketed = _padding_fraction(
        trainer.batch_by_length(ds, batch_size, N_MELS))
    naive = _padding_fraction(ds.padded_batch(batch_size))
    print(f"padding fraction: bucketed {bucketed:.1%}, naive {naive:.1%}")
    assert bucketed < 0.15
    # The comparison is what makes the number meaningful: shuffled batches
    # padded to their longest clip waste far more.
    assert bucketed < naive / 2


def test_bucketing_keeps_every_utterance():
    frame_counts = _corpus_frame_counts("dev")
    ds = _length_only_dataset(frame_counts, seed=1)
    seen = sorted(int(n) for inputs, _ in trainer.batch_by_length(ds, 16, N_MELS)
                  for n in inputs["lengths"].numpy())
    assert seen == sorted(frame_counts)


def test_bucket_boundaries_cover_the_longest_allowed_utterance():
    edges = trainer.bucket_boundaries()
    assert edges == sorted(set(edges))
    assert edges[-1] * trainer.BUCKET_RATIO >= (
        config.MAX_AUDIO_SECONDS / config.HOP_SECONDS)
    ratios = np.array(edges[1:]) / np.array(edges[:-1])
    assert np.all(ratios < trainer.BUCKET_RATIO + 0.02)


def test_batch_seconds_sizes_batches_by_audio_not_by_count():
    frame_counts = _corpus_frame_counts()
    seconds = 40.0
    ds = _length_only_dataset(frame_counts, seed=0)
    sizes, padded_seconds = [], []
    for inputs, _ in trainer.batch_by_length(ds, 16, N_MELS,
                                             batch_seconds=seconds):
        rows, frames = inputs["features"].shape[:2]
        sizes.append((rows, frames))
        padded_seconds.append(rows * frames * config.HOP_SECONDS)
    assert sum(rows for rows, _ in sizes) == len(frame_counts)
    # No batch holds more padded audio than asked; full batches of short
    # clips hold more clips than full batches of long ones.
    assert max(padded_seconds) <= seconds
    by_length = sorted(sizes, key=lambda s: s[1])
    assert by_length[0][0] > by_length[-1][0]
    # An epoch counts the batches one pass of the data fills.
    edges = trainer.bucket_boundaries()
    per_bucket = trainer.bucket_batch_sizes(edges, 16, seconds)
    assert per_bucket[0] == int(seconds // (edges[0] * config.HOP_SECONDS))
    n = trainer.count_batches(frame_counts, edges, per_bucket)
    assert len(sizes) - len(edges) - 1 <= n <= len(sizes)
    # Sized by count, an epoch is the examples over the batch size.
    assert trainer.count_batches(
        frame_counts, edges, trainer.bucket_batch_sizes(edges, 16)) == \
        -(-len(frame_counts) // 16)


def test_static_shapes_pad_to_bucket_edges_and_token_multiples():
    frame_counts = _corpus_frame_counts("dev")
    rng = np.random.default_rng(0)
    n_tokens = rng.integers(5, 60, len(frame_counts))

    def gen():
        for n, t in zip(frame_counts, n_tokens):
            yield ({"features": np.ones([n, N_MELS], np.float32),
                    "lengths": np.int32(n),
                    "tokens": np.ones([t], np.int32)},
                   np.ones([t], np.int32))
    spec = ({"features": tf.TensorSpec([None, N_MELS], tf.float32),
             "lengths": tf.TensorSpec([], tf.int32),
             "tokens": tf.TensorSpec([None], tf.int32)},
            tf.TensorSpec([None], tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    edges = trainer.bucket_boundaries() + [
        int(config.MAX_AUDIO_SECONDS / config.HOP_SECONDS) + 1]
    frames_seen, shapes = [], set()
    for inputs, targets in trainer.batch_by_length(ds, 8, N_MELS,
                                                   static_shapes=True):
        frames = inputs["features"].shape[1]
        assert frames + 1 in edges
        assert inputs["tokens"].shape[1] % trainer.TOKEN_PAD_MULTIPLE == 0
        assert inputs["tokens"].shape == targets.shape
        # Padding is PAD, which every loss masks out.
        real = tf.reduce_sum(tf.cast(targets != config.PAD_ID, tf.int32))
        assert int(real) == int(tf.reduce_sum(tf.cast(
            inputs["tokens"] != config.PAD_ID, tf.int32)))
        shapes.add((frames, inputs["tokens"].shape[1]))
        frames_seen += list(inputs["lengths"].numpy())
    assert sorted(frames_seen) == sorted(frame_counts)
    # Dynamic shapes would give about one shape per batch.
    assert len(shapes) <= len(edges) * 4


class _TransformOutput:
    """What make_dataset reads of a tft.TFTransformOutput."""

    def transformed_feature_spec(self):
        return {config.LOG_MEL_KEY: tf.io.VarLenFeature(tf.float32),
                config.NUM_FRAMES_KEY: tf.io.FixedLenFeature([], tf.int64),
                config.TOKENS_KEY: tf.io.VarLenFeature(tf.int64)}


def _write_transformed(path, frame_counts, seed=0):
    rng = np.random.default_rng(seed)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(path, options) as writer:
        for i, n in enumerate(frame_counts):
            feature = {
                config.LOG_MEL_KEY: tf.train.Feature(float_list=tf.train.FloatList(
                    value=rng.standard_normal(n * N_MELS))),
                config.NUM_FRAMES_KEY: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[n])),
                config.TOKENS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[config.SOS_ID, 3 + i % 20, config.EOS_ID]))}
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())


def test_training_order_is_deterministic_under_the_seed(tmp_path):
    frame_counts = _corpus_frame_counts("dev")[:60]
    path = str(tmp_path / "train.gz")
    _write_transformed(path, frame_counts)
    preset = _tiny_preset()

    def first_batches(p, n=6):
        ds = trainer.make_dataset([path], _TransformOutput(), p, training=True)
        return [inputs["lengths"].numpy().tolist()
                for inputs, _ in ds.take(n)]
    once = first_batches(preset)
    assert once == first_batches(preset)
    assert once != first_batches(_tiny_preset(seed=7))
    # The lengths make_dataset's epoch size is computed from.
    assert trainer._example_lengths([path], _TransformOutput(),
                                    "log_mel") == frame_counts


# --- Augmentation ---------------------------------------------------------------

def _batch(lengths, n_frames=None, seed=0):
    n_frames = n_frames or max(lengths)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal([len(lengths), n_frames, N_MELS]).astype(np.float32)
    x += 5.0  # no cell is 0 before masking
    x *= np.arange(n_frames)[None, :, None] < np.array(lengths)[:, None, None]
    return tf.constant(x), tf.constant(lengths, tf.int32)


def test_spec_augment_masks_whole_bands_inside_each_utterance():
    tf.random.set_seed(3)
    cfg = config.TrainConfig(freq_masks=2, freq_mask_fraction=0.3,
                             time_masks=2, time_mask_fraction=0.2)
    x, lengths = _batch([300, 120, 200])
    y = spec_augment_many(x, lengths, cfg, repeats=20)
    for out in y:
        out = out.numpy()
        for b, n in enumerate(lengths.numpy()):
            valid = out[b, :n]
            zero_bins = np.all(valid == 0, axis=0)
            zero_frames = np.all(valid == 0, axis=1)
            # Every zero cell lies in a masked band (bin column or frame row).
            cells = (valid == 0)
            assert np.all(cells == (zero_bins[None, :] | zero_frames[:, None]))
            assert zero_bins.sum() <= 2 * int(0.3 * N_MELS) + 2
            assert zero_frames.sum() <= 2 * int(0.2 * n) + 2
            # Padding stays padding.
            assert np.all(out[b, n:] == 0)
    masked = np.mean([np.mean(o.numpy() == 0) for o in y])
    assert masked > 0.05, "SpecAugment masked almost nothing"


def spec_augment_many(x, lengths, cfg, repeats):
    return [trainer.spec_augment(x, lengths, cfg) for _ in range(repeats)]


def test_spec_augment_off_is_identity():
    x, lengths = _batch([50, 80])
    cfg = config.TrainConfig(freq_masks=0, time_masks=0)
    np.testing.assert_array_equal(trainer.spec_augment(x, lengths, cfg), x)


def test_perturb_stretches_time_and_warps_mels():
    tf.random.set_seed(0)
    x, lengths = _batch([200, 100])
    cfg = config.TrainConfig(time_stretch=0.2, freq_warp=0.0)
    y, new_lengths = trainer.perturb(x, lengths, cfg)
    rate = y.shape[1] / x.shape[1]
    assert rate != 1.0 and 0.8 <= rate <= 1.2
    np.testing.assert_allclose(new_lengths.numpy(),
                               np.round(lengths.numpy() * rate), atol=1)

    cfg = config.TrainConfig(time_stretch=0.0, freq_warp=0.1)
    warped, same_lengths = trainer.perturb(x, lengths, cfg)
    assert warped.shape == x.shape
    np.testing.assert_array_equal(same_lengths, lengths)
    assert not np.allclose(warped, x)
    # Bin 0 maps onto itself whatever the warp.
    np.testing.assert_allclose(warped[:, :, 0], x[:, :, 0], rtol=1e-6)

    off = config.TrainConfig(time_stretch=0.0, freq_warp=0.0)
    same, _ = trainer.perturb(x, lengths, off)
    np.testing.assert_array_equal(same, x)


# --- Fault handling: resume and non-finite loss ------------------------------------

def _synthetic_dataset(preset, n_batches, nan_at=None, seed=0):
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(n_batches):
        n = 40
        x = rng.standard_normal([4, n, N_MELS]).astype(np.float32)
        if nan_at is not None and i == nan_at:
            x[1, 3, 7] = np.nan
        tokens = rng.integers(3, config.VOCAB_SIZE, [4, 6]).astype(np.int32)
        inputs = {"features": x, "lengths": np.full([4], n, np.int32),
                  "tokens": np.concatenate(
                      [np.full([4, 1], config.SOS_ID), tokens[:, :-1]], 1)}
        batches.append((inputs, tokens))
    return tf.data.Dataset.from_tensor_slices(
        tuple(tf.nest.map_structure(lambda *a: np.stack(a), *batches))).repeat()


class _CrashAfter(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {self.step}")


class _RecordOptimizer(keras.callbacks.Callback):
    """Snapshots the optimiser's variables at the start of training."""

    def on_train_begin(self, logs=None):
        self.at_begin = [v.numpy().copy()
                         for v in self.model.optimizer.variables]


def test_training_resumes_from_the_backup_with_its_optimizer_state(tmp_path):
    keras.utils.set_random_seed(0)
    preset = _tiny_preset()
    steps_per_epoch, total = 3, 12
    backup = str(tmp_path / "backup")
    ds = _synthetic_dataset(preset, 5)

    first = trainer.build_trainer(preset, total)
    with pytest.raises(KeyboardInterrupt):
        # Backups land at each epoch end: steps 3 and 6; killed at 7.
        trainer.fit(first, ds, None, total, steps_per_epoch, backup,
                    callbacks=[_CrashAfter(7)])
    checkpointed = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(os.path.join(backup, "chief")))
    # The optimiser's variables, in order: the step counter, then the moments.
    key = "model/optimizer/{}/.ATTRIBUTES/VARIABLE_VALUE"
    saved = [checkpointed.get_tensor(key.format("_iterations"))] + [
        checkpointed.get_tensor(key.format(f"_variables/{i}"))
        for i in range(1, len(first.optimizer.variables))]
    saved_step = int(saved[0])
    assert saved_step == 6

    second = trainer.build_trainer(preset, total)
    assert int(second.optimizer.iterations.numpy()) == 0
    recorder = _RecordOptimizer()
    history = trainer.fit(second, ds, None, total, steps_per_epoch, backup,
                          callbacks=[recorder])
    # Restored before the first resumed step: the step counter and Adam's
    # moments are the backup's, not a fresh optimiser's zeros.
    resumed = recorder.at_begin
    assert int(resumed[0]) == saved_step
    assert len(resumed) == len(saved)
    for restored, backed_up in zip(resumed[1:], saved[1:]):
        np.testing.assert_array_equal(restored, backed_up)
    assert any(np.any(m != 0) for m in resumed[1:])
    # Only the remaining epochs ran, and the run ended where a clean one would.
    assert len(history["loss"]) == (total - saved_step) // steps_per_epoch
    assert int(second.optimizer.iterations.numpy()) == total
    assert not os.path.exists(os.path.join(backup, "chief")) or not \
        tf.train.latest_checkpoint(os.path.join(backup, "chief"))


def test_a_nan_batch_stops_training_with_a_clear_error(tmp_path):
    keras.utils.set_random_seed(0)
    preset = _tiny_preset()
    model = trainer.build_trainer(preset, 10)
    ds = _synthetic_dataset(preset, 4, nan_at=2)
    with pytest.raises(FloatingPointError,
                       match=r"at step 3 .*NaN/inf features"):
        trainer.fit(model, ds, None, 10, 5, str(tmp_path / "backup"))


def test_backup_dir_is_stable_for_the_same_job_and_new_for_new_inputs():
    preset = config.get_preset("demo")
    a = trainer.backup_dir_for("/b", preset, ["/t/train-*", "/graph/1"])
    assert a == trainer.backup_dir_for("/b", preset, ["/graph/1", "/t/train-*"])
    assert a != trainer.backup_dir_for("/b", preset, ["/t/train-*", "/graph/2"])
    other = dataclasses.replace(
        preset, train=dataclasses.replace(preset.train, max_lr=1e-4))
    assert a != trainer.backup_dir_for("/b", other, ["/t/train-*", "/graph/1"])


def test_ema_exports_the_moving_average_of_the_weights(tmp_path):
    keras.utils.set_random_seed(0)
    preset = _tiny_preset(ema_momentum=0.9)
    model = trainer.build_trainer(preset, 6)
    assert model.optimizer.use_ema
    initial = [v.numpy().copy() for v in model.moonshine.trainable_variables]

    class _LastStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.weights = [v.numpy().copy()
                            for v in self.model.moonshine.trainable_variables]

    last = _LastStep()
    trainer.fit(model, _synthetic_dataset(preset, 3), None, 6, 3,
                str(tmp_path / "backup"), callbacks=[last])
    final = [v.numpy() for v in model.moonshine.trainable_variables]
    # The exported weights are neither the last step's nor the initial ones:
    # each lies between them, as an average over the trajectory does.
    assert not all(np.allclose(f, w) for f, w in zip(final, last.weights))
    moved = [np.abs(f - i).sum() / max(np.abs(w - i).sum(), 1e-12)
             for f, w, i in zip(final, last.weights, initial)
             if np.abs(w - i).sum() > 0]
    assert moved and 0.0 < np.median(moved) < 1.0


def _kill_then_resume(backup, kill_after, steps_per_epoch, total, **fit_args):
    """Trains until killed after step kill_after, then re-runs the same job:
    (the re-run's step counter when it began, its history, its trainer)."""
    keras.utils.set_random_seed(0)
    preset = _tiny_preset()
    ds = _synthetic_dataset(preset, 5)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(trainer.build_trainer(preset, total), ds, None, total,
                    steps_per_epoch, backup, callbacks=[_CrashAfter(kill_after)],
                    **fit_args)
    rerun, recorder = trainer.build_trainer(preset, total), _RecordOptimizer()
    history = trainer.fit(rerun, ds, None, total, steps_per_epoch, backup,
                          callbacks=[recorder], **fit_args)
    return int(recorder.at_begin[0]), history, rerun


def test_step_checkpoints_resume_inside_an_epoch(tmp_path):
    # Backups every 2 steps and at epoch ends (3 steps): 2, 3, 5, 6. Killed
    # after step 7, before its next backup: the re-run resumes at the epoch-2
    # backup and runs epoch 3 in full.
    resumed_at, history, rerun = _kill_then_resume(
        str(tmp_path / "a"), 7, 3, 9, checkpoint_every_steps=2)
    assert resumed_at == 6
    assert len(history["loss"]) == 1
    assert int(rerun.optimizer.iterations.numpy()) == 9
    # Killed right after the step-5 backup, mid-epoch: the re-run starts at
    # step 5 and finishes that epoch before the next.
    resumed_at, history, rerun = _kill_then_resume(
        str(tmp_path / "b"), 5, 3, 9, checkpoint_every_steps=2)
    assert resumed_at == 5
    assert len(history["loss"]) == 2
    assert int(rerun.optimizer.iterations.numpy()) == 9


def test_early_stopping_ends_training_when_validation_loss_stalls(tmp_path):
    keras.utils.set_random_seed(0)
    # A zero learning rate: the validation loss cannot improve after epoch 1.
    preset = _tiny_preset(max_lr=0.0)
    model = trainer.build_trainer(preset, 30)
    ds = _synthetic_dataset(preset, 3)
    history = trainer.fit(model, ds, ds.take(2), 30, 3,
                          str(tmp_path / "backup"), eval_steps=2,
                          early_stopping_patience=2)
    assert len(history["val_loss"]) == 3  # the best epoch + patience
    assert int(model.optimizer.iterations.numpy()) == 9


# --- Precision, XLA and distribution ---------------------------------------------

def test_precision_and_xla_follow_the_hardware():
    auto = config.TrainConfig()
    assert trainer.resolve_precision(auto, []) == "float32"
    assert trainer.resolve_precision(auto, [(8, 0), (9, 0)]) == "mixed_bfloat16"
    assert trainer.resolve_precision(auto, [(7, 5)]) == "mixed_float16"
    forced = config.TrainConfig(precision="mixed_bfloat16", jit_compile=False)
    assert trainer.resolve_precision(forced, []) == "mixed_bfloat16"
    assert not trainer.resolve_jit_compile(auto, [])
    assert trainer.resolve_jit_compile(auto, [(8, 0)])
    assert not trainer.resolve_jit_compile(forced, [(8, 0)])
    # This CI machine has no GPU: float32, no XLA.
    assert trainer.resolve_precision(auto) == "float32"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        config.TrainConfig(precision="fp8")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_exports_a_float32_model(tmp_path,
                                                             precision):
    keras.utils.set_random_seed(0)
    preset = _tiny_preset(precision=precision, ema_momentum=0.9)
    model = trainer.build_trainer(preset, 4)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.moonshine.compute_dtype == precision.split("_")[1]
    assert all(v.dtype == tf.float32 for v in model.moonshine.variables)
    assert isinstance(model.optimizer,
                      keras.mixed_precision.LossScaleOptimizer) == (
        precision == "mixed_float16")
    history = trainer.fit(model, _synthetic_dataset(preset, 2), None, 4, 2,
                          str(tmp_path / "backup"))
    assert all(np.isfinite(history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 4

    exported = trainer.float32_model(model.moonshine)
    assert exported.compute_dtype == "float32"
    for a, b in zip(exported.get_weights(), model.moonshine.get_weights()):
        np.testing.assert_array_equal(a, b)
    inputs, _ = next(iter(_synthetic_dataset(preset, 1)))
    full = exported(inputs)
    half = model.moonshine(inputs)
    assert full.dtype == tf.float32
    # Same weights, lower-precision arithmetic: close, not equal.
    np.testing.assert_allclose(full, tf.cast(half, tf.float32), atol=0.25)


def test_an_xla_compiled_train_step_trains_on_static_shapes(tmp_path):
    keras.utils.set_random_seed(0)
    preset = _tiny_preset(jit_compile=True)
    model = trainer.build_trainer(preset, 4)
    assert model._jit_compile
    history = trainer.fit(model, _synthetic_dataset(preset, 2), None, 4, 2,
                          str(tmp_path / "backup"))
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_strategy_follows_tf_config_and_local_gpus():
    assert trainer.strategy_kind(None, 0) == "default"
    assert trainer.strategy_kind(None, 1) == "default"
    assert trainer.strategy_kind(None, 4) == "mirrored"
    two_workers = json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                              "task": {"type": "worker", "index": 1}})
    assert trainer.strategy_kind(two_workers, 8) == "multi_worker"
    assert not trainer.is_chief(two_workers)
    assert trainer.is_chief(two_workers.replace('"index": 1', '"index": 0'))
    with_chief = json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                             "task": {"type": "worker", "index": 0}})
    assert trainer.strategy_kind(with_chief, 0) == "multi_worker"
    assert not trainer.is_chief(with_chief)
    assert trainer.is_chief(None)


# --- The waveform front end through the pipeline --------------------------------

def test_waveform_buckets_are_in_samples():
    edges = trainer.bucket_boundaries(
        per_second=trainer.lengths_per_second("waveform"))
    frames = trainer.bucket_boundaries()
    assert len(edges) == len(frames)
    assert edges[0] == trainer.MIN_BUCKET_SECONDS * config.SAMPLE_RATE
    assert edges[-1] * trainer.BUCKET_RATIO >= (
        config.MAX_AUDIO_SECONDS * config.SAMPLE_RATE)
    clips = [4000, 16_000, 17_000, 64_000]

    def gen():
        for n in clips:
            yield ({"features": np.ones([n], np.float32),
                    "lengths": np.int32(n), "tokens": np.ones([3], np.int32)},
                   np.ones([3], np.int32))

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        {"features": tf.TensorSpec([None], tf.float32),
         "lengths": tf.TensorSpec([], tf.int32),
         "tokens": tf.TensorSpec([None], tf.int32)},
        tf.TensorSpec([None], tf.int32)))
    batches = list(trainer.batch_by_length(ds, 4, N_MELS, "waveform"))
    # 16,000 and 17,000 samples share a bucket; 4,000 and 64,000 do not.
    assert sorted(inputs["lengths"].numpy().tolist()
                  for inputs, _ in batches) == [[4000], [16_000, 17_000],
                                                [64_000]]
    for inputs, _ in batches:
        assert inputs["features"].shape.rank == 2


@pytest.fixture(scope="module")
def published_steps(tmp_path_factory):
    """ExampleGen and Transform as create_pipeline wires them for the ci
    preset as published: waveform front end, official BPE vocabulary."""
    import pipeline_steps
    from pipeline import pipeline as pipeline_def

    preset = pipeline_def.with_model_options(
        config.get_preset("ci"), config.MOONSHINE_BPE_VOCABULARY, "waveform")
    tmp = str(tmp_path_factory.mktemp("published_steps"))
    return preset, pipeline_steps.ingest_and_transform(tmp, preset)


@pytest.mark.slow
def test_waveform_transform_passes_the_ingested_samples(published_steps):
    import pipeline_steps

    _, steps = published_steps
    for split in config.SPLITS:
        raw = {}
        for ex in pipeline_steps.records(steps.examples.uri, split):
            f = ex.features.feature
            raw[f[config.UTTERANCE_ID_KEY].bytes_list.value[0]] = np.array(
                f[config.AUDIO_KEY].float_list.value, np.float32)
        for ex in pipeline_steps.records(steps.transformed.uri, split):
            f = ex.features.feature
            audio = raw.pop(f[config.UTTERANCE_ID_KEY].bytes_list.value[0])
            assert config.LOG_MEL_KEY not in f
            np.testing.assert_array_equal(
                np.array(f[config.WAVEFORM_KEY].float_list.value, np.float32),
                audio)
            assert f[config.NUM_SAMPLES_KEY].int64_list.value[0] == len(audio)
        assert not raw, split


@pytest.mark.slow
def test_waveform_model_trains_on_transform_output_and_serves(
        published_steps, tmp_path):
    import tensorflow_transform as tft

    import pipeline_steps
    from models import serving

    preset, steps = published_steps
    tft_output = tft.TFTransformOutput(steps.transform_graph.uri)
    files = [os.path.join(steps.transformed.uri, "Split-train", "*.gz")]
    ds = trainer.make_dataset(files, tft_output, preset, training=True,
                              batch_size=2)
    inputs, targets = next(iter(ds))
    assert inputs["features"].shape.rank == 2  # [batch, samples]
    assert int(tf.reduce_max(inputs["lengths"])) == inputs["features"].shape[1]
    assert int(tf.reduce_max(targets)) >= config.VOCAB_SIZE  # BPE ids

    keras.utils.set_random_seed(0)
    model = trainer.build_trainer(preset, total_steps=3)
    stem = model.moonshine.encoder.frontend.conv1.kernel  # the paper's stem
    stem_before = stem.numpy().copy()
    history = trainer.fit(model, ds, None, total_steps=3, steps_per_epoch=3,
                          backup_dir=str(tmp_path / "backup"))
    assert np.isfinite(history["loss"]).all()
    assert not np.array_equal(stem.numpy(), stem_before)

    export_dir = str(tmp_path / "serving")
    serving.export_serving_model(model.moonshine, tft_output, preset,
                                 export_dir)
    transcribe = tf.saved_model.load(export_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]
    audio, lengths = pipeline_steps.padded_audio(steps.data_root, "test")
    out = transcribe(audio=audio, num_samples=lengths)
    text = out[config.TEXT_OUTPUT_KEY]
    assert text.dtype == tf.string and text.shape == lengths.shape
    # Padding in the batch changes nothing: one clip alone gives the same
    # ids as in the padded batch.
    alone = transcribe(audio=audio[:1, :int(lengths[0])],
                       num_samples=lengths[:1])
    ids = out[config.TOKENS_OUTPUT_KEY].numpy()[0]
    alone_ids = alone[config.TOKENS_OUTPUT_KEY].numpy()[0]
    n = min(len(ids), len(alone_ids))
    np.testing.assert_array_equal(ids[:n], alone_ids[:n])
