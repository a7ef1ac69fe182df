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


def test_token_noise_replaces_about_its_rate_of_real_inputs_only():
    tf.random.set_seed(0)
    batch, length = 64, 40
    tokens = tf.random.uniform([batch, length], 3, config.VOCAB_SIZE,
                               dtype=tf.int32)
    tokens = tf.concat([tf.fill([batch, 1], config.SOS_ID), tokens,
                        tf.fill([batch, 9], config.PAD_ID)], axis=1)
    np.testing.assert_array_equal(
        losses.noisy_tokens(tokens, 0.0, config.VOCAB_SIZE), tokens)
    noisy = losses.noisy_tokens(tokens, 0.3, config.VOCAB_SIZE).numpy()
    original = tokens.numpy()
    np.testing.assert_array_equal(noisy[:, 0], config.SOS_ID)  # <s> kept
    np.testing.assert_array_equal(noisy[:, -9:], config.PAD_ID)  # PAD kept
    real = noisy[:, 1:1 + length]
    assert real.min() >= len(config.SPECIAL_TOKENS)
    assert real.max() < config.VOCAB_SIZE
    # A draw equal to the original leaves it: 0.3 * (1 - 1/28) expected.
    changed = float(np.mean(real != original[:, 1:1 + length]))
    assert 0.25 < changed < 0.33, changed


def test_token_noise_is_training_only():
    """With augmentation and dropout off, the training and evaluation losses
    are equal without token noise and differ with it."""
    import tf_keras as keras

    from conftest import tiny_preset
    from models import trainer

    rng = np.random.default_rng(1)
    _, targets = _batch(rng, frames=40)
    inputs = {"features": tf.constant(rng.standard_normal(
        [4, 40, config.N_MELS]), tf.float32),
        "lengths": tf.constant([40, 31, 22, 38]),
        "tokens": tf.concat([tf.fill([4, 1], config.SOS_ID),
                             targets[:, :-1]], axis=1)}
    quiet = dict(freq_masks=0, time_masks=0, time_stretch=0.0, freq_warp=0.0)
    for noise, equal in ((0.0, True), (0.5, False)):
        keras.utils.set_random_seed(0)
        model = trainer.build_trainer(tiny_preset(token_noise=noise, **quiet),
                                      10)
        train_ce = float(model._compute_losses(inputs, targets, True)[1])
        eval_ce = float(model._compute_losses(inputs, targets, False)[1])
        assert (abs(train_ce - eval_ce) < 1e-6) == equal, (noise, train_ce,
                                                           eval_ce)
