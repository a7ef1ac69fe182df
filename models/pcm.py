"""Lossless 16-bit PCM in the raw examples, decoded inside the Transform graph.

The ExampleGen stores each utterance's 16 kHz mono 16-bit samples as one
bytes feature of two values (config.AUDIO_PCM_KEY) instead of float32 samples
in a FloatList: building a FloatList costs a Python float per sample, and its
4 bytes per sample compress poorly. The two values are byte planes of the
zigzag-coded samples, which the examples' TFRecord GZIP compresses well and
TensorFlow decodes with plain ops:

    z[n] = (x[n] << 1) ^ (x[n] >> 15)      zigzag: small |x|, small z, so a
                                           quiet sample's high byte is 0
    values = [low bytes of z, high bytes of z]

Speech is mostly quiet, so the high plane is mostly zeros. On the embedded
corpus this takes the GZIP'd audio from 24.6 kB per audio-second (float32) or
19.7 (plain int16) to 15.8, against 13.5 for FLAC itself (BENCHMARKS.md);
coding first differences instead would give 14.1, for a cumulative sum that
makes decoding 2.5x slower. FLAC would need a decoder op TensorFlow does not
have. Decoding is decode_raw and bit operations, exact by construction, so
the Transform and serving graphs carry it and loading a SavedModel needs
nothing else.

Audio that 16 bits cannot hold exactly (24-bit sources, resampled or
down-mixed audio) is rounded to 16 bits by `to_pcm16`, which says so: the
ExampleGen counts and reports every such utterance (`requantized`).
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

PCM_SCALE = 32768.0  # int16 full scale, as soundfile reads PCM_16 to float


def to_pcm16(samples: np.ndarray) -> Tuple[np.ndarray, bool]:
    """(int16 samples, exact): float32 samples in [-1, 1) rounded to 16
    bits, and whether that lost nothing (true for 8- and 16-bit sources)."""
    scaled = np.asarray(samples, np.float32) * np.float32(PCM_SCALE)
    pcm = np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)
    return pcm, bool(np.array_equal(pcm.astype(np.float32), scaled))


def encode(pcm: np.ndarray) -> List[bytes]:
    """The feature's two values for int16 samples: [low plane, high plane]."""
    x = np.asarray(pcm, np.int16).astype(np.int32)
    z = ((x << 1) ^ (x >> 15)).astype(np.uint16)
    return [(z & 0xFF).astype(np.uint8).tobytes(),
            (z >> 8).astype(np.uint8).tobytes()]


def decode(planes: List[bytes]) -> np.ndarray:
    """int16 samples of encode()'s values (NumPy; the graph's is tf_decode)."""
    low, high = (np.frombuffer(p, np.uint8).astype(np.int32) for p in planes)
    z = low | (high << 8)
    return ((z >> 1) ^ -(z & 1)).astype(np.int16)


def tf_decode(planes):
    """A batch of encode()'s values (string [B, 2]) -> (float32 [B, T]
    samples in [-1, 1), zero-padded, and int64 [B] lengths); a row of empty
    strings is an empty row."""
    import tensorflow as tf

    planes = tf.convert_to_tensor(planes, tf.string)
    low, high = planes[:, 0], planes[:, 1]
    lengths = tf.strings.length(low)
    # decode_raw wants a positive width; an all-empty batch gets one byte of
    # padding, sliced off below.
    width = tf.maximum(tf.reduce_max(tf.concat([lengths, [0]], 0)), 1)

    def plane(x):
        return tf.cast(tf.io.decode_raw(x, tf.uint8, fixed_length=width),
                       tf.int32)
    z = plane(low) | tf.bitwise.left_shift(plane(high), 8)
    x = tf.bitwise.bitwise_xor(tf.bitwise.right_shift(z, 1),
                               -tf.bitwise.bitwise_and(z, 1))
    valid = tf.range(width)[tf.newaxis, :] < lengths[:, tf.newaxis]
    samples = tf.where(valid, tf.cast(x, tf.float32) / PCM_SCALE, 0.0)
    return (samples[:, :tf.reduce_max(tf.concat([lengths, [0]], 0))],
            tf.cast(lengths, tf.int64))
