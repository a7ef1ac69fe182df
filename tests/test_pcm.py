"""The raw examples' audio encoding (models/pcm.py): lossless both ways,
in NumPy and in the graph, on synthetic and embedded-corpus audio."""

import glob
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import EMBEDDED_CORPUS
from models import pcm


def _cases():
    rng = np.random.default_rng(0)
    flacs = sorted(glob.glob(os.path.join(EMBEDDED_CORPUS, "*", "*", "*",
                                          "*.flac")))[::97][:8]
    return ([rng.integers(-32768, 32768, 3000).astype(np.int16),
             # The extremes: differences that wrap around 16 bits.
             np.array([32767, -32768, 32767, -32768, 0, -1, 1], np.int16),
             np.zeros(0, np.int16), np.array([-5], np.int16)]
            + [sf.read(f, dtype="int16")[0] for f in flacs])


def test_encode_decode_is_lossless():
    for samples in _cases():
        planes = pcm.encode(samples)
        assert [len(p) for p in planes] == [len(samples)] * 2
        np.testing.assert_array_equal(pcm.decode(planes), samples)


def test_the_graph_decodes_a_batch_exactly_with_padding():
    cases = _cases()
    samples, lengths = pcm.tf_decode(tf.constant([pcm.encode(c)
                                                  for c in cases]))
    assert samples.dtype == tf.float32 and lengths.dtype == tf.int64
    for row, expected in zip(samples.numpy(), cases):
        n = len(expected)
        np.testing.assert_array_equal(row[:n], expected / pcm.PCM_SCALE)
        assert not row[n:].any()  # padding is silence
    np.testing.assert_array_equal(lengths, [len(c) for c in cases])
    empty, n = pcm.tf_decode(tf.constant([[b"", b""]]))
    assert empty.shape == (1, 0) and n.numpy().tolist() == [0]


def test_to_pcm16_says_when_it_rounds():
    exact = np.array([0, 1, -32768, 32767], np.int16) / pcm.PCM_SCALE
    pcm16, lossless = pcm.to_pcm16(exact.astype(np.float32))
    assert lossless and pcm16.tolist() == [0, 1, -32768, 32767]
    _, lossless = pcm.to_pcm16(np.array([0.1234567], np.float32))
    assert not lossless
    clipped, lossless = pcm.to_pcm16(np.array([1.5, -1.5], np.float32))
    assert clipped.tolist() == [32767, -32768] and not lossless


def test_the_encoding_is_smaller_than_float32_samples_under_gzip():
    """On the embedded corpus, GZIP'd: at most 70 % of the float32 bytes
    (BENCHMARKS.md measures the whole corpus: 64 %)."""
    import zlib
    floats = coded = 0
    for samples in _cases()[4:]:
        floats += len(zlib.compress(tf.train.FloatList(
            value=samples / pcm.PCM_SCALE).SerializeToString(), 6))
        coded += len(zlib.compress(b"".join(pcm.encode(samples)), 6))
    assert coded < floats * 0.7, (coded, floats)
