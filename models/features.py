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
- an `n_mels`-band (default `N_MELS`) mel filterbank on librosa's default Slaney mel scale with
  Slaney ("constant energy per band") normalisation, `MEL_FMIN`..`MEL_FMAX`;
- `log(mel + LOG_FLOOR)` (natural log), which keeps digital silence finite.

Mel filterbank: `librosa.filters.mel(htk=False, norm='slaney')` itself,
called once per configuration at graph-construction time and embedded in the
graph as a constant, so the Transform and serving graphs carry the matrix and
loading a SavedModel never needs librosa. TensorFlow's own
`tf.signal.linear_to_mel_weight_matrix` implements the HTK scale without
normalisation, which is not what librosa (and Whisper / most PyTorch recipes)
compute.

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


# --- Mel filterbank ---------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _mel_filterbank_cached(sample_rate: float, fft_length: int, n_mels: int,
                           fmin: float, fmax: float) -> np.ndarray:
    import librosa  # graph construction only: the matrix becomes a constant

    weights = librosa.filters.mel(sr=sample_rate, n_fft=fft_length,
                                  n_mels=n_mels, fmin=fmin, fmax=fmax,
                                  htk=False, norm="slaney", dtype=np.float64)
    matrix = np.ascontiguousarray(weights.T, dtype=np.float32)
    matrix.setflags(write=False)
    return matrix


def mel_filterbank(sample_rate: float = config.SAMPLE_RATE,
                   fft_length: int = config.FFT_LENGTH,
                   n_mels: int = config.N_MELS,
                   fmin: float = config.MEL_FMIN,
                   fmax: float = config.MEL_FMAX) -> np.ndarray:
    """[fft_length // 2 + 1, n_mels] float32 Slaney mel matrix (librosa's `.T`)."""
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
def log_mel_frames(audio, n_mels: int = config.N_MELS):
    """Log-mel [B, F, n_mels] of every whole window of float32 audio [B, T]
    (F = frames_for_samples(T)), nothing masked: the arithmetic of
    `log_mel_spectrogram`, which the TFLite front end (one unpadded
    utterance, models/tflite.py) also runs."""
    stft = tf.signal.stft(
        audio,
        frame_length=config.WINDOW_SAMPLES,
        frame_step=config.HOP_SAMPLES,
        fft_length=config.FFT_LENGTH,
        window_fn=functools.partial(tf.signal.hann_window, periodic=True),
        pad_end=False)
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    mel_matrix = tf.constant(mel_filterbank(n_mels=n_mels),
                             dtype=tf.float32, name="mel_filterbank")
    mel = tf.tensordot(power, mel_matrix, axes=1)
    mel.set_shape(power.shape[:-1].concatenate([n_mels]))
    return tf.math.log(mel + config.LOG_FLOOR)


def log_mel_spectrogram(audio, num_samples, n_mels: int = config.N_MELS,
                        name: str = "log_mel_spectrogram"):
    """Log-mel features of a zero-padded batch of 16 kHz audio.

    Args:
      audio: float32 [B, T] samples, each row zero-padded after its valid part.
      num_samples: integer [B], the valid length of each row (<= T).
      n_mels: mel bands.

    Returns:
      (log_mel float32 [B, F, n_mels], num_frames int64 [B]) where
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

        log_mel = log_mel_frames(audio, n_mels)[:, :max_frames]
        mask = tf.sequence_mask(num_frames, maxlen=max_frames, dtype=tf.bool)
        log_mel = tf.where(mask[:, :, None], log_mel, tf.zeros_like(log_mel))
        return log_mel, num_frames
