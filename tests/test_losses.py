"""The training losses (models/losses.py)."""

import numpy as np
import tensorflow as tf

from models import config, losses


def _batch(rng, batch=4, frames=30, tokens=12, lengths=(12, 7, 3, 10)):
    logits = tf.constant(rng.standard_normal(
        [batch, frames, config.VOCAB_SIZE]), tf.float32)
    targets = rng.integers(3, config.VOCAB_SIZE, [batch, tokens])
    for row, n in enumerate(lengths):  # ... </s> then PAD, as the Trainer's
        targets[row, n - 1] = config.EOS_ID
        targets[row, n:] = config.PAD_ID
    return logits, tf.constant(targets, tf.int32)


def test_ctc_through_the_sparse_kernel_equals_the_dense_path():
    logits, targets = _batch(np.random.default_rng(0))
    # Row 3 has fewer frames than labels: no alignment, left out of both.
    encoded_lengths = tf.constant([30, 25, 10, 5], tf.int32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        kernel = losses.ctc(logits, encoded_lengths, targets)
        dense = losses.ctc(logits, encoded_lengths, targets,
                           jit_compile=True)
    np.testing.assert_allclose(kernel, dense, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(kernel, logits),
                               tape.gradient(dense, logits), atol=1e-5)
    assert np.isfinite(kernel)
    # The infeasible row's logits get no gradient.
    assert not np.any(tape.gradient(kernel, logits)[3])


def test_ctc_dense_path_compiles_with_xla():
    logits, targets = _batch(np.random.default_rng(1))
    encoded_lengths = tf.constant([30, 25, 10, 20], tf.int32)
    compiled = tf.function(
        lambda *a: losses.ctc(*a, jit_compile=True), jit_compile=True)
    np.testing.assert_allclose(
        compiled(logits, encoded_lengths, targets),
        losses.ctc(logits, encoded_lengths, targets), rtol=1e-5)


def test_repeated_labels_need_a_frame_between_them():
    # "aa" needs three frames (a, blank, a): two frames has no alignment.
    logits = tf.zeros([2, 2, config.VOCAB_SIZE])
    a = 5
    targets = tf.constant([[a, a, config.EOS_ID], [a, a + 1, config.EOS_ID]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.ctc(logits, tf.constant([2, 2]), targets)
    grads = tape.gradient(loss, logits)
    assert np.isfinite(loss)
    assert not np.any(grads[0]) and np.any(grads[1])
