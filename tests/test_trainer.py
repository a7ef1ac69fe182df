"""The Trainer's input pipeline, augmentation and fault handling.

Padding is measured on the embedded corpus's real utterance lengths; resume
and NaN handling run the real `fit` on a small model.
"""

import dataclasses
import glob
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
