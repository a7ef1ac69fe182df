"""Log-mel features in pure TensorFlow, shared by Transform and serving.

`log_mel_spectrogram` is the one front end: Transform's `preprocessing_fn`
calls it over the training data and the same graph is baked into the serving
signature, so train and serve cannot skew. Every number comes from
`models.config`.

Definition (librosa's, which is the field's reference and what the tests check
against):

- frames of `WINDOW_SAMPLES` (25 ms) every `HOP_SAMPLES` (10 ms), no centring
  and no end padding: an example of `n` samples has
  `1 + (n - WINDOW_SAMPLES) // HOP_SAMPLES` frames (0 if `n < WINDOW_SAMPLES`);
- a periodic Hann window over the `WINDOW_SAMPLES` samples, zero-padded to
  `FFT_LENGTH` for the real FFT; power spectrum |X|^2;
- an `N_MELS`-band mel filterbank on librosa's default Slaney mel scale with
  Slaney ("constant energy per band") normalisation, `MEL_FMIN`..`MEL_FMAX`;
- `log(mel + LOG_FLOOR)` (natural log), which keeps digital silence finite.

Mel filterbank choice: the [FFT_LENGTH // 2 + 1, N_MELS] matrix is computed once
with NumPy at graph-construction time by `mel_filterbank()` (a transcription of
`librosa.filters.mel(htk=False, norm='slaney')`) and embedded in the graph as a
constant. TensorFlow's own `tf.signal.linear_to_mel_weight_matrix` implements
the HTK scale without normalisation, which is not what librosa (and Whisper /
most PyTorch recipes) compute. Writing the 20-line formula here rather than
calling librosa keeps the heavy librosa/numba import out of the pipeline and
serving code paths; `tests/test_features.py` checks the matrix against
`librosa.filters.mel` itself.

Note on the librosa reference: with `n_fft=FFT_LENGTH > win_length=WINDOW_SAMPLES`
librosa centres the window inside each `FFT_LENGTH`-sample frame, i.e. its frame
`t` analyses samples `[t*HOP + p, t*HOP + p + WINDOW)` with
`p = (FFT_LENGTH - WINDOW_SAMPLES) // 2`. Our frame `t` analyses
`[t*HOP, t*HOP + WINDOW)` (the spectrum's power does not depend on where the
window sits inside the FFT buffer), so librosa with `center=False` on the audio
padded by `p` zeros at both ends gives exactly our frames; see the test.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from models import config

NUM_FFT_BINS = config.FFT_LENGTH // 2 + 1


# --- Mel filterbank (Slaney scale and norm, as librosa's default) ----------
_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear region
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_MEL + np.log(
        np.maximum(hz, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(hz >= _SLANEY_MIN_LOG_HZ, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_HZ * np.exp(
        _SLANEY_LOGSTEP * (np.maximum(mel, _SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL))
    return np.where(mel >= _SLANEY_MIN_LOG_MEL, log, linear)


@functools.lru_cache(maxsize=None)
def _mel_filterbank_cached(sample_rate: float, fft_length: int, n_mels: int,
                           fmin: float, fmax: float) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, fft_length // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    matrix = np.ascontiguousarray(weights.T, dtype=np.float32)
    matrix.setflags(write=False)
    return matrix


def mel_filterbank(sample_rate: float = config.SAMPLE_RATE,
                   fft_length: int = config.FFT_LENGTH,
                   n_mels: int = config.N_MELS,
                   fmin: float = config.MEL_FMIN,
                   fmax: float = config.MEL_FMAX) -> np.ndarray:
    """[fft_length // 2 + 1, n_mels] float32 Slaney mel matrix (= librosa's `.T`)."""
    return _mel_filterbank_cached(float(sample_rate), int(fft_length),
                                  int(n_mels), float(fmin), float(fmax))


# --- Frame counts ----------------------------------------------------------
def frames_for_samples(num_samples):
    """Number of valid frames for `num_samples` samples.

    `1 + (n - WINDOW_SAMPLES) // HOP_SAMPLES`, or 0 when `n < WINDOW_SAMPLES`.
    Accepts a Python int (returns int), a NumPy array (returns int64 array) or a
    tensor (returns an int64 tensor of the same shape).
    """
    if tf.is_tensor(num_samples):
        n = tf.cast(num_samples, tf.int64)
        frames = 1 + (n - config.WINDOW_SAMPLES) // config.HOP_SAMPLES
        return tf.where(n >= config.WINDOW_SAMPLES, frames, tf.zeros_like(frames))
    n = np.asarray(num_samples, dtype=np.int64)
    frames = np.where(n >= config.WINDOW_SAMPLES,
                      1 + (n - config.WINDOW_SAMPLES) // config.HOP_SAMPLES, 0)
    if frames.ndim == 0:
        return int(frames)
    return frames.astype(np.int64)


# --- Log-mel ---------------------------------------------------------------
def log_mel_spectrogram(audio, num_samples, name: str = "log_mel_spectrogram"):
    """Log-mel features of a zero-padded batch of 16 kHz audio.

    Args:
      audio: float32 [B, T] samples, each row zero-padded after its valid part.
      num_samples: integer [B], the valid length of each row (<= T).

    Returns:
      (log_mel float32 [B, F, N_MELS], num_frames int64 [B]) where
      `num_frames = frames_for_samples(num_samples)`, `F = max(num_frames)` (0
      for an empty batch or one with only sub-window clips), and every frame at
      or beyond an example's `num_frames` is exactly 0. The features of an
      example therefore do not depend on how much the batch was padded or on
      the other examples. B and T may be dynamic (works in TFT's
      `preprocessing_fn` and in `tf.function` serving signatures).
    """
    with tf.name_scope(name):
        audio = tf.convert_to_tensor(audio, dtype=tf.float32)
        audio.shape.with_rank(2)
        num_samples = tf.cast(tf.convert_to_tensor(num_samples), tf.int64)
        num_samples.shape.with_rank(1)
        total = tf.shape(audio, out_type=tf.int64)[1]
        checks = [
            tf.debugging.assert_less_equal(
                num_samples, total,
                message="num_samples exceeds the padded audio length"),
            tf.debugging.assert_non_negative(
                num_samples, message="num_samples must be >= 0"),
        ]
        with tf.control_dependencies(checks):
            num_frames = frames_for_samples(num_samples)
        max_frames = tf.reduce_max(
            tf.concat([num_frames, tf.zeros([1], tf.int64)], axis=0))

        # Only the samples the longest example needs, and at least one window
        # (tf.signal.stft cannot make zero frames).
        needed = tf.maximum(
            (max_frames - 1) * config.HOP_SAMPLES + config.WINDOW_SAMPLES,
            config.WINDOW_SAMPLES)
        audio = audio[:, :needed]
        audio = tf.pad(audio, [[0, 0], [0, needed - tf.shape(audio, out_type=tf.int64)[1]]])

        stft = tf.signal.stft(
            audio,
            frame_length=config.WINDOW_SAMPLES,
            frame_step=config.HOP_SAMPLES,
            fft_length=config.FFT_LENGTH,
            window_fn=functools.partial(tf.signal.hann_window, periodic=True),
            pad_end=False)
        power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
        mel_matrix = tf.constant(mel_filterbank(), dtype=tf.float32,
                                 name="mel_filterbank")
        mel = tf.tensordot(power, mel_matrix, axes=1)
        mel.set_shape(power.shape[:-1].concatenate([config.N_MELS]))
        log_mel = tf.math.log(mel + config.LOG_FLOOR)

        log_mel = log_mel[:, :max_frames]
        mask = tf.sequence_mask(num_frames, maxlen=max_frames, dtype=tf.bool)
        log_mel = tf.where(mask[:, :, None], log_mel, tf.zeros_like(log_mel))
        return log_mel, num_frames
