"""Room acoustics and noise on training waveforms (models/room.py), on real
utterances of the embedded corpus, and in the Trainer's input pipeline."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import EMBEDDED_CORPUS, tiny_preset
from models import config, data, room

SR = config.SAMPLE_RATE
SEED = tf.constant([7, 11], tf.int64)


def _clips(n, prefix="train"):
    flacs = sorted(glob.glob(os.path.join(
        EMBEDDED_CORPUS, f"{prefix}*", "*", "*", "*.flac")))[:n]
    assert len(flacs) == n, EMBEDDED_CORPUS
    return [sf.read(f, dtype="float32")[0] for f in flacs]


def _padded(clips, extra=0):
    """float32 [clips, longest + extra] zero-padded, and int64 lengths."""
    audio = np.zeros([len(clips), max(map(len, clips)) + extra], np.float32)
    for i, clip in enumerate(clips):
        audio[i, :len(clip)] = clip
    return tf.constant(audio), tf.constant([len(c) for c in clips], tf.int64)


def _snr_db(clean, noisy, n):
    return 10 * np.log10(np.sum(clean[:n] ** 2)
                         / np.sum((noisy[:n] - clean[:n]) ** 2))


def _decay_rt60(y, start, window=int(0.02 * SR), drop_db=25.0):
    """RT60 measured from y's energy decay after `start` (20 ms windows, a
    line fitted over the first drop_db dB of the fall)."""
    energy = np.array([10 * np.log10(np.mean(y[s:s + window] ** 2) + 1e-30)
                       for s in range(start, len(y) - window, window)])
    below = np.flatnonzero(energy < energy[0] - drop_db)
    fall = energy[:below[0] if below.size else len(energy)]
    assert len(fall) >= 3, energy
    slope = np.polyfit(np.arange(len(fall)) * window / SR, fall, 1)[0]
    return -60.0 / slope


def test_off_by_default_and_probability_zero_is_the_identity():
    train = config.TrainConfig()
    assert not room.enabled(train)
    audio, lengths = _padded(_clips(3))
    assert room.augment(audio, lengths, train, SEED) is audio


def test_a_room_lengthens_the_decay_by_its_rt60():
    """Half a second of silence after a real utterance: dry it stays
    digital silence; reverberated, it holds a tail that decays at the
    requested RT60, longer rooms leaving more energy; the padding of the
    shorter row stays zero and the level stays the dry one."""
    (clip, short) = _clips(2)
    end = len(clip)
    audio, lengths = _padded([np.concatenate([clip, np.zeros(SR // 2)]),
                              short[:SR]])
    rt60s = [0.2, 0.6]
    tails = []
    for rt60 in rt60s:
        rirs = room.impulse_responses(tf.constant([rt60, rt60]),
                                      tf.constant([0.0, 0.0]), int(0.7 * SR),
                                      SEED)
        wet = room.reverberate(audio, lengths, rirs).numpy()
        assert wet.shape == audio.shape
        assert not np.any(wet[1, SR:]), "padding must stay zero"
        np.testing.assert_allclose(room.rms(wet, lengths),
                                   room.rms(audio, lengths), rtol=1e-4)
        tails.append(np.sum(wet[0, end:] ** 2) / np.sum(wet[0] ** 2))
        assert _decay_rt60(wet[0], end) == pytest.approx(rt60, rel=0.2)
    assert not np.any(audio.numpy()[0, end:])
    assert 0 < tails[0] < tails[1] / 10


def test_impulse_responses_have_the_requested_direct_to_reverberant_ratio():
    drr = np.array([-3.0, 0.0, 12.0], np.float32)
    rirs = room.impulse_responses(tf.constant([0.3, 0.5, 0.1]),
                                  tf.constant(drr), 8000, SEED).numpy()
    np.testing.assert_array_equal(rirs[:, 0], 1.0)
    measured = 10 * np.log10(1.0 / np.sum(rirs[:, 1:] ** 2, axis=1))
    np.testing.assert_allclose(measured, drr, atol=1e-3)


def test_noise_is_added_at_the_requested_snr_over_each_utterance():
    audio, lengths = _padded(_clips(3))
    snr = np.array([5.0, 20.0, 30.0], np.float32)
    noisy = room.add_noise(audio, lengths, tf.constant(snr),
                           tf.constant([0.0, 1.0, 2.0]), SEED).numpy()
    clean = audio.numpy()
    for row, n in enumerate(lengths.numpy()):
        assert _snr_db(clean[row], noisy[row], n) == pytest.approx(
            snr[row], abs=0.05)
        assert not np.any(noisy[row, n:]), "padding must stay zero"


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_noise_colour_has_the_requested_spectral_slope(exponent):
    """White, pink and brown: power falls as f ** -exponent (fitted on a
    log-log periodogram between 200 Hz and 6 kHz)."""
    noise = room.coloured_noise(8, SR, tf.fill([8], exponent), SEED).numpy()
    power = np.mean(np.abs(np.fft.rfft(noise, axis=1)) ** 2, axis=0)
    hz = np.fft.rfftfreq(SR, 1.0 / SR)
    band = (hz >= 200) & (hz <= 6000)
    slope = np.polyfit(np.log(hz[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.1)


def test_each_effect_acts_on_its_share_of_utterances_reproducibly():
    clips = [c[:SR] for c in _clips(4)] * 16  # 64 one-second utterances
    audio, lengths = _padded(clips)
    clean = audio.numpy()
    noise_only = config.TrainConfig(noise_probability=0.5,
                                    noise_snr_db=(10.0, 30.0))
    noisy = room.augment(audio, lengths, noise_only, SEED).numpy()
    changed = np.any(noisy != clean, axis=1)
    assert 0.3 < changed.mean() < 0.7
    snrs = [_snr_db(clean[r], noisy[r], SR) for r in np.flatnonzero(changed)]
    assert min(snrs) > 10.0 - 0.05 and max(snrs) < 30.0 + 0.05
    assert max(snrs) - min(snrs) > 10.0, "SNRs should spread over the range"
    np.testing.assert_array_equal(
        room.augment(audio, lengths, noise_only, SEED), noisy)
    assert np.any(room.augment(audio, lengths, noise_only,
                               tf.constant([8, 11], tf.int64)) != noisy)

    both = config.TrainConfig(reverb_probability=1.0, noise_probability=1.0)
    out = room.augment(audio, lengths, both, SEED).numpy()
    assert out.shape == clean.shape and np.all(np.any(out != clean, axis=1))
    # A draw that picks no utterance at all leaves the batch as it was.
    never = room.augment(audio[:1], lengths[:1], dataclasses.replace(
        both, reverb_probability=1e-9, noise_probability=1e-9), SEED)
    np.testing.assert_array_equal(never, clean[:1])


def test_config_checks_and_json_round_trip():
    with pytest.raises(ValueError, match="noise_probability"):
        config.TrainConfig(noise_probability=1.5)
    with pytest.raises(ValueError, match="reverb_rt60_seconds"):
        config.TrainConfig(reverb_rt60_seconds=(0.7, 0.1))
    with pytest.raises(ValueError, match="reverb_rt60_seconds"):
        config.TrainConfig(reverb_rt60_seconds=(0.0, 0.5))
    import json
    preset = tiny_preset(reverb_probability=0.5, noise_snr_db=(5, 15))
    back = config.preset_from_dict(json.loads(json.dumps(
        config.training_dict(preset))))
    assert back.train == preset.train
    assert back.train.noise_snr_db == (5.0, 15.0)


# --- In the Trainer's input pipeline (Transform's graph) --------------------

def _batches(steps, preset, training, n=None, split="train"):
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(steps.transform_graph.uri)
    files = [os.path.join(steps.examples.uri, f"Split-{split}", "*.gz")]
    ds = data.make_dataset(files, output, preset, training=training,
                           batch_size=2)
    return [(inputs["features"].numpy(), inputs["lengths"].numpy())
            for inputs, _ in (ds.take(n) if n else ds)]


@pytest.mark.slow
def test_float_audio_path_gives_the_pcm_path_features(ci_steps):
    """Augmented audio reaches Transform's graph as float samples, as the
    serving signature feeds it; unchanged samples give the same features as
    the PCM the ExampleGen wrote."""
    import tensorflow_transform as tft

    import pipeline_steps

    output = tft.TFTransformOutput(ci_steps.transform_graph.uri)
    front = tiny_preset().model.front_end
    serialized = tf.constant([e.SerializeToString() for e in
                              pipeline_steps.records(ci_steps.examples.uri,
                                                     "train")])
    plain = data.raw_to_features(output, front)(serialized)
    seen = []

    def identity(samples, lengths, index):
        seen.append(index)
        return samples
    via_float = data.raw_to_features(output, front, identity)(
        tf.constant(3, tf.int64), serialized)
    assert seen and int(seen[0]) == 3
    for a, b in zip(plain, via_float):  # features, lengths, tokens
        if isinstance(a, tf.RaggedTensor):
            np.testing.assert_array_equal(a.nested_row_lengths(),
                                          b.nested_row_lengths())
            a, b = a.flat_values, b.flat_values
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_training_batches_get_rooms_and_noise_and_eval_batches_do_not(
        ci_steps):
    off = tiny_preset()
    on = tiny_preset(reverb_probability=1.0, noise_probability=1.0)
    dry = _batches(ci_steps, off, training=True, n=4)
    wet = _batches(ci_steps, on, training=True, n=4)
    for (f_dry, n_dry), (f_wet, n_wet) in zip(dry, wet):
        # Same utterances in the same order: lengths and shapes unchanged.
        np.testing.assert_array_equal(n_wet, n_dry)
        assert f_wet.shape == f_dry.shape
        assert f_wet.shape[-1] == off.model.n_mels
        assert np.all(np.isfinite(f_wet))
        for row, n in enumerate(n_wet):
            assert not np.any(f_wet[row, n:]), "padding must stay zero"
            assert np.any(f_wet[row, :n] != f_dry[row, :n])
    # Reproducible under the seed.
    again = _batches(ci_steps, on, training=True, n=4)
    for (f, _), (g, _) in zip(wet, again):
        np.testing.assert_array_equal(f, g)
    # Evaluation never sees them.
    for (f, n), (g, m) in zip(
            _batches(ci_steps, off, training=False, split="eval"),
            _batches(ci_steps, on, training=False, split="eval")):
        np.testing.assert_array_equal(f, g)
        np.testing.assert_array_equal(n, m)
