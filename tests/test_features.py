"""models/features.py against librosa, the field's log-mel reference."""

import glob
import os

import librosa
import numpy as np
import pytest
import tensorflow as tf

from models import config, features

from conftest import EMBEDDED_CORPUS

# Max |ours - librosa| in natural-log units. Measured: at most 1.4e-4 over
# chirp-plus-noise clips of 0.5-7 s and three seeds, 0 on digital silence, 2e-6
# on clipped noise (float32 FFT rounding in both; largest in low-energy bins).
# 1e-3 leaves margin for other CPUs' FFT kernels while any framing, window,
# filterbank or log-floor mismatch shows up as errors of 0.1 or more.
LOG_MEL_ATOL = 1e-3

# librosa centres the WINDOW_SAMPLES window inside each FFT_LENGTH frame; padding
# the audio by this much on both sides makes its frames exactly ours (see the
# features module docstring).
_LIBROSA_PAD = (config.FFT_LENGTH - config.WINDOW_SAMPLES) // 2


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    """[frames, N_MELS] reference log-mel of one clip."""
    mel = librosa.feature.melspectrogram(
        y=np.pad(y, (_LIBROSA_PAD, _LIBROSA_PAD)), sr=config.SAMPLE_RATE,
        n_fft=config.FFT_LENGTH, win_length=config.WINDOW_SAMPLES,
        hop_length=config.HOP_SAMPLES, window="hann", center=False, power=2.0,
        n_mels=config.N_MELS, fmin=config.MEL_FMIN, fmax=config.MEL_FMAX)
    return np.log(mel + config.LOG_FLOOR).T


def ours(y: np.ndarray):
    log_mel, frames = features.log_mel_spectrogram(
        tf.constant(y[None, :], tf.float32), tf.constant([len(y)], tf.int64))
    return log_mel.numpy()[0], int(frames.numpy()[0])


def chirp_with_noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * config.SAMPLE_RATE) + 37  # not a whole number of hops
    t = np.arange(n) / config.SAMPLE_RATE
    sweep = 0.5 * np.sin(2 * np.pi * (80 * t + 900 * t ** 2))  # 80 Hz -> ~5.5 kHz
    y = sweep + 0.02 * rng.standard_normal(n)
    y[: n // 10] = 1e-4 * rng.standard_normal(n // 10)  # near-silence lead-in
    return y.astype(np.float32)


def embedded_flac():
    paths = sorted(glob.glob(os.path.join(EMBEDDED_CORPUS, "**", "*.flac"),
                             recursive=True))
    if not paths:
        pytest.skip(f"no FLAC under {EMBEDDED_CORPUS}")
    import soundfile
    y, sr = soundfile.read(paths[0], dtype="float32")
    assert sr == config.SAMPLE_RATE, (paths[0], sr)
    return y[: 8 * config.SAMPLE_RATE]


def test_mel_filterbank_is_librosas_slaney_default():
    reference = librosa.filters.mel(
        sr=config.SAMPLE_RATE, n_fft=config.FFT_LENGTH, n_mels=config.N_MELS,
        fmin=config.MEL_FMIN, fmax=config.MEL_FMAX)  # htk=False, norm='slaney'
    ours_matrix = features.mel_filterbank()
    assert ours_matrix.shape == (config.FFT_LENGTH // 2 + 1, config.N_MELS)
    np.testing.assert_allclose(ours_matrix, reference.T, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("source", ["chirp", "flac"])
def test_log_mel_matches_librosa(source):
    y = chirp_with_noise(3.0) if source == "chirp" else embedded_flac()
    reference = librosa_log_mel(y)
    got, frames = ours(y)
    assert frames == reference.shape[0] == features.frames_for_samples(len(y))
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() < LOG_MEL_ATOL


def test_frames_for_samples():
    w, h = config.WINDOW_SAMPLES, config.HOP_SAMPLES
    cases = {0: 0, 1: 0, w - h: 0, w - 1: 0, w: 1, w + h - 1: 1, w + h: 2,
             config.SAMPLE_RATE: 1 + (config.SAMPLE_RATE - w) // h}
    for n, expected in cases.items():
        assert features.frames_for_samples(n) == expected, n
        assert int(features.frames_for_samples(tf.constant(n))) == expected, n
    np.testing.assert_array_equal(
        features.frames_for_samples(np.array(list(cases))), list(cases.values()))


def test_padding_invariance_and_masking():
    long_clip = chirp_with_noise(1.3, seed=1)
    short_clip = chirp_with_noise(0.45, seed=2)[::-1].copy()
    extra = 1000  # the batch is padded beyond its longest clip as well
    batch = np.zeros((2, len(long_clip) + extra), np.float32)
    batch[0, : len(long_clip)] = long_clip
    batch[1, : len(short_clip)] = short_clip
    log_mel, frames = features.log_mel_spectrogram(
        batch, tf.constant([len(long_clip), len(short_clip)], tf.int64))
    log_mel, frames = log_mel.numpy(), frames.numpy()
    n_long, n_short = (features.frames_for_samples(len(c))
                       for c in (long_clip, short_clip))
    np.testing.assert_array_equal(frames, [n_long, n_short])
    assert log_mel.shape == (2, n_long, config.N_MELS)
    alone_long, _ = ours(long_clip)
    alone_short, _ = ours(short_clip)
    np.testing.assert_allclose(log_mel[0], alone_long, atol=1e-5)
    np.testing.assert_allclose(log_mel[1, :n_short], alone_short, atol=1e-5)
    assert not np.any(log_mel[1, n_short:])  # padding frames are exactly zero


def test_clips_shorter_than_a_window_have_no_frames():
    audio = np.zeros((2, config.WINDOW_SAMPLES - 1), np.float32)
    log_mel, frames = features.log_mel_spectrogram(audio, [config.WINDOW_SAMPLES - 1, 0])
    assert log_mel.shape == (2, 0, config.N_MELS)
    np.testing.assert_array_equal(frames.numpy(), [0, 0])


def test_dynamic_shapes_in_a_saved_model(tmp_path):
    module = tf.Module()
    module.fn = tf.function(
        features.log_mel_spectrogram,
        input_signature=[tf.TensorSpec([None, None], tf.float32),
                         tf.TensorSpec([None], tf.int64)])
    module.fn.get_concrete_function()
    tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    y = chirp_with_noise(0.7)
    for batch in (1, 3):
        audio = np.tile(y[None, :], (batch, 1))
        log_mel, frames = loaded.fn(tf.constant(audio), tf.fill([batch], tf.constant(len(y), tf.int64)))
        expected, n = ours(y)
        assert log_mel.shape == (batch, n, config.N_MELS)
        np.testing.assert_allclose(log_mel.numpy()[-1], expected, atol=1e-5)


def test_rejects_lengths_beyond_the_audio():
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples exceeds"):
        features.log_mel_spectrogram(np.zeros((1, 800), np.float32), [801])
