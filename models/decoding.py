"""Greedy decoding inside the graph: one tf.while_loop, no Python per token.

`greedy_decode(model, encoded, encoded_lengths, max_tokens)` returns token ids
[B, N] int32 without the leading <s>; a row's </s> is kept and every position
after it is PAD_ID. N is the number of steps taken: at most max(max_tokens),
fewer when every row has emitted </s> (the loop stops early).

With `use_cache=True` (the default) each step feeds one token: the decoder's
self-attention keys/values live in preallocated [B, heads, N, head_dim] caches
written in place with tensor_scatter_nd_update, and the cross-attention
keys/values are computed once from the encoder output, so a step costs the
attention over the prefix and nothing that grows beyond it. `use_cache=False`
recomputes the whole prefix every step (the reference the tests compare with).

`beam_search_decode` is the same loop over beam_width hypotheses per row
(the caches reordered by a gather each step); beam_width 1 equals greedy.

`ctc_best_path` decodes without the decoder (config.CTC_DECODING): the CTC
head's most likely token per frame, repeats merged, blanks dropped, in one
pass and the same output format.
"""

from __future__ import annotations

import tensorflow as tf

from models import config


def max_tokens_for_duration(seconds) -> tf.Tensor:
    """Per-example decode cap (int32): MAX_TOKENS_PER_SECOND x duration,
    at least MIN_DECODE_TOKENS."""
    seconds = tf.cast(seconds, tf.float32)
    n = tf.cast(tf.math.ceil(seconds * config.MAX_TOKENS_PER_SECOND), tf.int32)
    return tf.maximum(n, config.MIN_DECODE_TOKENS)


def _limits(max_tokens, batch):
    """Per-row caps [B] and the loop bound max(caps) (0 for an empty batch)."""
    limits = tf.maximum(tf.broadcast_to(tf.cast(max_tokens, tf.int32), [batch]), 0)
    return limits, tf.reduce_max(tf.concat([limits, [0]], 0))


@tf.autograph.experimental.do_not_convert  # an explicit tf.while_loop
def greedy_decode(model, encoded, encoded_lengths, max_tokens,
                  use_cache: bool = True) -> tf.Tensor:
    """encoded [B, T, dim], encoded_lengths [B], max_tokens scalar or [B]
    -> token ids [B, N] int32 (no <s>; PAD_ID after </s>)."""
    with tf.name_scope("greedy_decode"):
        encoded = tf.convert_to_tensor(encoded)
        encoded_lengths = tf.cast(encoded_lengths, tf.int32)
        batch = tf.shape(encoded)[0]
        limits, max_len = _limits(max_tokens, batch)
        decoder = model.decoder

        if use_cache:
            cross = decoder.cross_keys_values(encoded, encoded_lengths)
            state = decoder.init_cache(batch, max_len)

            def step(last, t, out, cache):
                return decoder.step(last, t, cache, cross)
        else:
            state = ()

            def step(last, t, out, unused_state):
                sos = tf.fill([batch, 1], config.SOS_ID)
                prefix = tf.concat([sos, out[:, :t]], axis=1)  # [B, t + 1]
                logits = model.decode(prefix, encoded, encoded_lengths)
                return logits[:, -1], unused_state

        rows = tf.range(batch)

        def cond(t, last, finished, out, state):
            return tf.logical_and(t < max_len,
                                  tf.logical_not(tf.reduce_all(finished)))

        def body(t, last, finished, out, state):
            logits, state = step(last, t, out, state)
            token = tf.argmax(logits, axis=-1, output_type=tf.int32)
            token = tf.where(finished, config.PAD_ID, token)
            out = tf.tensor_scatter_nd_update(
                out, tf.stack([rows, tf.fill([batch], t)], axis=1), token)
            finished = (finished | tf.equal(token, config.EOS_ID)
                        | (t + 1 >= limits))
            return t + 1, token, finished, out, state

        t, _, _, out, _ = tf.while_loop(
            cond, body,
            loop_vars=(tf.constant(0), tf.fill([batch], config.SOS_ID),
                       limits <= 0, tf.fill([batch, max_len], config.PAD_ID),
                       state))
        return out[:, :t]


@tf.autograph.experimental.do_not_convert  # an explicit tf.while_loop
def beam_search_decode(model, encoded, encoded_lengths, max_tokens,
                       beam_width: int = 4, length_penalty: float = 0.0
                       ) -> tf.Tensor:
    """Beam search with the decoder cache -> best token ids [B, N] int32.

    Same output format as `greedy_decode`. A finished beam stays in the beam,
    extended by PAD at no cost; the search stops when every beam of every
    row has finished or at max(max_tokens). The best beam maximises
    sum(log p) / length ** length_penalty (length counts </s>); beam_width 1
    is greedy decoding.
    """
    k = int(beam_width)
    if k < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    with tf.name_scope("beam_search_decode"):
        encoded = tf.convert_to_tensor(encoded)
        batch = tf.shape(encoded)[0]
        limits, max_len = _limits(max_tokens, batch)
        beam_limits = tf.repeat(limits, k)  # [B * K], row-major beams
        decoder = model.decoder
        # Every beam is a row of its own: [B * K, ...].
        cross = decoder.cross_keys_values(
            tf.repeat(encoded, k, axis=0),
            tf.repeat(tf.cast(encoded_lengths, tf.int32), k))
        cache = decoder.init_cache(batch * k, max_len)
        neg = tf.constant(-1e9)
        # Only beam 0 is live at first: the K copies of <s> are one prefix.
        scores = tf.tile(tf.concat([[0.0], tf.fill([k - 1], neg)], 0)[None],
                         [batch, 1])
        origin = (tf.range(batch) * k)[:, None]  # first flat row of each row

        def cond(t, last, finished, seqs, scores, lengths, cache):
            return tf.logical_and(t < max_len,
                                  tf.logical_not(tf.reduce_all(finished)))

        def body(t, last, finished, seqs, scores, lengths, cache):
            logits, cache = decoder.step(last, t, cache, cross)
            logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
            vocab = tf.shape(logp)[-1]
            # A finished beam continues with PAD only, at no cost.
            pad_only = tf.one_hot(config.PAD_ID, vocab, on_value=0.0,
                                  off_value=neg)
            logp = tf.where(tf.reshape(finished, [-1])[:, None], pad_only, logp)
            total = scores[:, :, None] + tf.reshape(logp, [batch, k, vocab])
            scores, best = tf.math.top_k(tf.reshape(total, [batch, -1]), k)
            beam, token = best // vocab, best % vocab
            rows = tf.reshape(origin + beam, [-1])  # flat source rows
            cache = tf.nest.map_structure(lambda c: tf.gather(c, rows), cache)
            seqs = tf.gather(seqs, beam, batch_dims=1)
            seqs = tf.tensor_scatter_nd_update(
                seqs, tf.stack([tf.repeat(tf.range(batch), k),
                                tf.tile(tf.range(k), [batch]),
                                tf.fill([batch * k], t)], 1),
                tf.reshape(token, [-1]))
            was_finished = tf.gather(finished, beam, batch_dims=1)
            lengths = (tf.gather(lengths, beam, batch_dims=1)
                       + tf.cast(tf.logical_not(was_finished), tf.int32))
            finished = (was_finished | tf.equal(token, config.EOS_ID)
                        | (t + 1 >= tf.reshape(beam_limits, [batch, k])))
            return (t + 1, tf.reshape(token, [-1]), finished, seqs, scores,
                    lengths, cache)

        loop_vars = (tf.constant(0), tf.fill([batch * k], config.SOS_ID),
                     tf.reshape(beam_limits <= 0, [batch, k]),
                     tf.fill([batch, k, max_len], config.PAD_ID),
                     scores, tf.zeros([batch, k], tf.int32), cache)
        t, _, _, seqs, scores, lengths, _ = tf.while_loop(
            cond, body, loop_vars, shape_invariants=tf.nest.map_structure(
                lambda x: tf.TensorShape([None] * x.shape.rank), loop_vars))
        normalised = scores / tf.pow(
            tf.cast(tf.maximum(lengths, 1), tf.float32), length_penalty)
        best = tf.argmax(normalised, axis=1, output_type=tf.int32)
        return tf.gather(seqs, best, batch_dims=1)[:, :t]


def ctc_best_path(ctc_logits, encoded_lengths) -> tf.Tensor:
    """CTC logits [B, T, vocab] over encoded_lengths [B] valid frames ->
    token ids [B, N] int32, in greedy_decode's format: each frame's argmax
    (the first maximum), a repeat of the previous frame's merged, blanks
    (PAD's id) and the other specials dropped, then </s>, then PAD."""
    with tf.name_scope("ctc_best_path"):
        best = tf.argmax(ctc_logits, axis=-1, output_type=tf.int32)
        frames = tf.shape(best)[1]
        valid = tf.sequence_mask(tf.cast(encoded_lengths, tf.int32), frames)
        previous = tf.pad(best[:, :-1], [[0, 0], [1, 0]],
                          constant_values=config.PAD_ID)
        # A label repeated in the transcript has a blank between its frames,
        # so merging equal neighbours keeps it twice.
        keep = (valid & tf.not_equal(best, previous)
                & (best >= len(config.SPECIAL_TOKENS)))
        ids = tf.ragged.boolean_mask(best, keep)
        eos = tf.fill(tf.stack([ids.nrows(), 1]), config.EOS_ID)
        return tf.concat([ids, eos], axis=1).to_tensor(config.PAD_ID)
