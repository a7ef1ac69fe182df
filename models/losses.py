"""The training losses: label-smoothed cross-entropy and the auxiliary CTC.

Hybrid CTC/attention (ESPnet): the decoder's teacher-forced cross-entropy
plus a CTC loss on a training-only head over the encoder, which makes the
encoder align audio and tokens early. Both are computed in float32 whatever
the compute dtype, and averaged over real (non-PAD) tokens.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from models import config


def cross_entropy(logits: tf.Tensor, targets: tf.Tensor, vocab_size: int,
                  label_smoothing: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """(mean label-smoothed cross-entropy, token accuracy) over non-PAD
    targets; logits [B, L, vocab] float32, targets [B, L]."""
    mask = tf.cast(tf.not_equal(targets, config.PAD_ID), tf.float32)
    n_tokens = tf.maximum(tf.reduce_sum(mask), 1.0)
    one_hot = tf.one_hot(targets, vocab_size)
    smooth = one_hot * (1.0 - label_smoothing) + label_smoothing / vocab_size
    ce = tf.nn.softmax_cross_entropy_with_logits(smooth, logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                               targets), tf.float32)
    return (tf.reduce_sum(ce * mask) / n_tokens,
            tf.reduce_sum(correct * mask) / n_tokens)


def ctc(ctc_logits: tf.Tensor, encoded_lengths: tf.Tensor,
        targets: tf.Tensor, jit_compile: bool = False) -> tf.Tensor:
    """CTC loss per label token of the targets without </s> (the blank is
    PAD's id: PAD never appears inside a label); ctc_logits [B, T, vocab].

    Sparse labels select TensorFlow's CTC kernels (C++ on CPU, cuDNN on a
    GPU); dense labels run a tf.scan over the frames, which made the demo
    model's training 4x slower on 1-20 s utterances, but are the only form
    XLA compiles, so a jit-compiled step (static shapes) uses them.
    """
    labels = tf.where(tf.equal(targets, config.EOS_ID), config.PAD_ID,
                      targets)
    label_lengths = tf.reduce_sum(
        tf.cast(tf.not_equal(labels, config.PAD_ID), tf.int32), -1)
    # An utterance too fast for the encoder's frame rate has no CTC
    # alignment (it needs a frame per label and one between repeats): its
    # CTC loss is left out; it still trains through the decoder.
    repeats = tf.reduce_sum(tf.cast(
        tf.equal(labels[:, 1:], labels[:, :-1])
        & tf.not_equal(labels[:, 1:], config.PAD_ID), tf.int32), -1)
    logit_lengths = tf.cast(encoded_lengths, tf.int32)
    feasible = ((logit_lengths >= label_lengths + repeats)
                & (label_lengths > 0))
    if not jit_compile:
        # The kernels reject a row without an alignment (or an empty one):
        # a one-token label stands in for it; its loss is dropped below.
        filler = tf.one_hot(0, tf.shape(labels)[1], on_value=config.EOS_ID,
                            off_value=config.PAD_ID, dtype=labels.dtype)
        labels = tf.cast(tf.RaggedTensor.from_tensor(
            tf.where(feasible[:, None], labels, filler[None]),
            lengths=tf.where(feasible, label_lengths, 1)).to_sparse(),
            tf.int32)
    per_example = tf.nn.ctc_loss(
        labels=labels, logits=ctc_logits, label_length=label_lengths,
        logit_length=logit_lengths, logits_time_major=False,
        blank_index=config.PAD_ID)
    per_example = tf.where(feasible, per_example, 0.0)
    return tf.reduce_sum(per_example) / tf.maximum(
        tf.reduce_sum(tf.cast(label_lengths, tf.float32)
                      * tf.cast(feasible, tf.float32)), 1.0)


def noisy_tokens(tokens: tf.Tensor, rate: float, vocab_size: int
                 ) -> tf.Tensor:
    """Teacher-forcing inputs [B, L] with about `rate` of the real tokens
    after the first replaced by uniformly drawn non-special ids; <s>, PAD
    and the targets are untouched."""
    first_real = len(config.SPECIAL_TOKENS)
    position = tf.range(tf.shape(tokens)[1])[tf.newaxis, :]
    replace = ((tf.random.uniform(tf.shape(tokens)) < rate)
               & (position > 0) & tf.not_equal(tokens, config.PAD_ID))
    drawn = tf.random.uniform(tf.shape(tokens), first_real, vocab_size,
                              dtype=tokens.dtype)
    return tf.where(replace, drawn, tokens)
