"""The Trainer's training loop: fault handling, EMA, precision, and the
waveform front end through the pipeline's own ExampleGen and Transform.

Resume and NaN handling run the real `fit` on a small model.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import tiny_preset
from models import config, data, pcm, serving, trainer

N_MELS = config.N_MELS


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
    preset = tiny_preset()
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
    preset = tiny_preset()
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
    preset = tiny_preset(ema_momentum=0.9)
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
    preset = tiny_preset()
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
    preset = tiny_preset(max_lr=0.0)
    model = trainer.build_trainer(preset, 30)
    ds = _synthetic_dataset(preset, 3)
    history = trainer.fit(model, ds, ds.take(2), 30, 3,
                          str(tmp_path / "backup"), eval_steps=2,
                          early_stopping_patience=2)
    assert len(history["val_loss"]) == 3  # the best epoch + patience
    assert int(model.optimizer.iterations.numpy()) == 9


# --- Precision, XLA and distribution ---------------------------------------------

@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_exports_a_float32_model(tmp_path,
                                                             precision):
    keras.utils.set_random_seed(0)
    preset = tiny_preset(precision=precision, ema_momentum=0.9)
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

    # What the Trainer saves is what a float32 model loads: the variables
    # are float32 under every policy (models/serving.save_trained).
    serving.save_trained(model.moonshine, preset, str(tmp_path / "trained"))
    exported, _ = serving.load_trained(str(tmp_path / "trained"))
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
    preset = tiny_preset(jit_compile=True)
    model = trainer.build_trainer(preset, 4)
    assert model._jit_compile
    history = trainer.fit(model, _synthetic_dataset(preset, 2), None, 4, 2,
                          str(tmp_path / "backup"))
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]


def test_an_xla_step_takes_the_demo_presets_augmentations(tmp_path):
    """Time stretch and mel warp under XLA (a GPU's default): no shape may
    depend on the random rate, and the mel axis must stay static."""
    keras.utils.set_random_seed(0)
    demo = config.get_preset("demo").train
    preset = tiny_preset(jit_compile=True, time_stretch=demo.time_stretch,
                         freq_warp=demo.freq_warp)
    assert preset.train.time_stretch and preset.train.freq_warp
    model = trainer.build_trainer(preset, 4)
    history = trainer.fit(model, _synthetic_dataset(preset, 2), None, 4, 2,
                          str(tmp_path / "backup"))
    assert all(np.isfinite(history["loss"]))


# --- The waveform front end through the pipeline --------------------------------

@pytest.fixture(scope="module")
def published_steps(tmp_path_factory):
    """ExampleGen and Transform as create_pipeline wires them for the ci
    preset as published: waveform front end, official BPE vocabulary."""
    import pipeline_steps

    preset = config.get_preset("ci").with_overrides(
        config.MOONSHINE_BPE_VOCABULARY, config.WAVEFORM_FRONTEND)
    tmp = str(tmp_path_factory.mktemp("published_steps"))
    return preset, pipeline_steps.ingest_and_transform(tmp, preset)


@pytest.mark.slow
def test_waveform_transform_passes_the_ingested_samples(published_steps):
    """The waveform front end's features, as the Trainer computes them, are
    the ingested samples unchanged."""
    import pipeline_steps

    preset, steps = published_steps
    for split in config.SPLITS:
        raw = {}
        for ex in pipeline_steps.records(steps.examples.uri, split):
            f = ex.features.feature
            encoded = list(f[config.AUDIO_PCM_KEY].bytes_list.value)
            raw[f[config.UTTERANCE_ID_KEY].bytes_list.value[0].decode()] = (
                pcm.decode(encoded).astype(np.float32) / pcm.PCM_SCALE)
        view = pipeline_steps.trainer_view(steps, preset, split)
        assert set(view) == set(raw), split
        for uid, (samples, length, _) in view.items():
            np.testing.assert_array_equal(samples, raw[uid])
            assert length == len(raw[uid])


@pytest.mark.slow
def test_waveform_model_trains_on_the_raw_examples_and_serves(
        published_steps, tmp_path):
    import tensorflow_transform as tft

    import pipeline_steps
    from models import serving

    preset, steps = published_steps
    tft_output = tft.TFTransformOutput(steps.transform_graph.uri)
    files = [os.path.join(steps.examples.uri, "Split-train", "*.gz")]
    ds = data.make_dataset(files, tft_output, preset, training=True,
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
