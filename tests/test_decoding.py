"""Greedy decoding in the graph: cache vs full recompute, caps, early stop,
SavedModel round trip."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import config
from models import decoding
from models import moonshine

SMALL = config.ModelConfig(dim=64, ffn_dim=96, n_heads=2, enc_layers=1,
                           dec_layers=2, dropout=0.0)
V = config.VOCAB_SIZE


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)  # Python, NumPy and TF seeds
    m = moonshine.Moonshine(SMALL, with_ctc_head=True)
    # A random final-norm scale gives a random model varied (not constant,
    # not copy-the-input) outputs under the tied embedding.
    gamma = m.decoder.norm.gamma
    gamma.assign(3.0 * tf.random.stateless_normal(gamma.shape, [1, 9]))
    return m


@pytest.fixture(scope="module")
def encoded(model):
    features = tf.random.stateless_normal([3, 48, config.N_MELS], [4, 0])
    return model.encode(features, tf.constant([48, 30, 9]))


def test_max_tokens_for_duration():
    seconds = [0.0, 0.1, 1.0, 2.04, 35.0]
    expected = [max(math.ceil(s * config.MAX_TOKENS_PER_SECOND),
                    config.MIN_DECODE_TOKENS) for s in seconds]
    got = decoding.max_tokens_for_duration(tf.constant(seconds))
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got, expected)


def test_cached_step_matches_full_decode(model, encoded):
    """The cache path computes the same logits as teacher forcing."""
    enc, lengths = encoded
    tokens = tf.random.stateless_uniform([3, 6], [5, 0], minval=3, maxval=V,
                                         dtype=tf.int32)
    full = model.decode(tokens, enc, lengths)
    decoder = model.decoder
    cross = decoder.cross_keys_values(enc, lengths)
    cache = decoder.init_cache(tf.constant(3), tf.constant(6))
    for t in range(6):
        logits, cache = decoder.step(tokens[:, t], tf.constant(t), cache, cross)
        np.testing.assert_allclose(logits, full[:, t], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("max_tokens", [12, [12, 4, 9]])
def test_cached_and_uncached_greedy_agree(model, encoded, max_tokens):
    enc, lengths = encoded
    cached = decoding.greedy_decode(model, enc, lengths, max_tokens)
    uncached = decoding.greedy_decode(model, enc, lengths, max_tokens,
                                      use_cache=False)
    assert cached.dtype == tf.int32
    np.testing.assert_array_equal(cached, uncached)
    assert len(np.unique(cached.numpy())) > 2  # not a degenerate model


def test_greedy_is_the_argmax_of_teacher_forcing(model, encoded):
    enc, lengths = encoded
    out = decoding.greedy_decode(model, enc, lengths, 10).numpy()
    prefix = np.concatenate([np.full([3, 1], config.SOS_ID), out[:, :-1]], 1)
    argmax = np.argmax(model.decode(prefix, enc, lengths), -1)
    for row, best in zip(out, argmax):
        n = (list(row).index(config.EOS_ID) + 1 if config.EOS_ID in row
             else len(row))
        np.testing.assert_array_equal(row[:n], best[:n])


def test_stops_at_max_tokens(model, encoded):
    enc, lengths = encoded
    out = decoding.greedy_decode(model, enc, lengths, tf.constant([7, 3, 0]))
    assert out.shape[1] <= 7
    out = out.numpy()
    assert np.all(out[1, 3:] == config.PAD_ID)
    assert np.all(out[2] == config.PAD_ID)
    assert decoding.greedy_decode(model, enc, lengths, 0).shape == (3, 0)
    assert decoding.greedy_decode(model, enc, lengths, 5).shape[1] <= 5


class _ScriptedDecoder:
    """Stand-in for Moonshine.decoder that emits a fixed script per row."""

    def __init__(self, script):
        self.script = tf.constant(script, tf.int32)
        self.step_traces = 0

    def cross_keys_values(self, encoded, lengths):
        return [], None

    def init_cache(self, batch, max_len):
        return [tf.zeros([batch])]

    def step(self, tokens, t, cache, cross):
        self.step_traces += 1  # Python runs once per trace, not per token
        return tf.one_hot(self.script[:, t], V), cache


class _ScriptedModel:
    def __init__(self, script):
        self.decoder = _ScriptedDecoder(script)

    def decode(self, tokens, encoded, encoded_lengths):
        return tf.one_hot(self.decoder.script[:, :tf.shape(tokens)[1]], V)


EOS = config.EOS_ID
SCRIPT = [[5, 6, EOS, 7, 7, 7, 7, 7, 7, 7],
          [5, 5, 5, 5, EOS, 9, 9, 9, 9, 9]]


@pytest.mark.parametrize("use_cache", [True, False])
def test_stops_when_every_row_has_ended(use_cache):
    stub = _ScriptedModel(SCRIPT)
    fn = tf.function(lambda enc, n: decoding.greedy_decode(
        stub, enc, tf.constant([1, 1]), n, use_cache=use_cache))
    out = fn(tf.zeros([2, 1, 4]), tf.constant(10)).numpy()
    np.testing.assert_array_equal(out, [[5, 6, EOS, 0, 0], [5, 5, 5, 5, EOS]])
    if use_cache:  # one trace of the step for five tokens: the loop is a graph
        assert stub.decoder.step_traces == 1
    # Caps per row; a row cut by its cap has no EOS.
    out = fn(tf.zeros([2, 1, 4]), tf.constant([10, 3])).numpy()
    np.testing.assert_array_equal(out, [[5, 6, EOS], [5, 5, 5]])


class _Transcriber(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, config.N_MELS], tf.float32),
        tf.TensorSpec([None], tf.int64)])
    def transcribe(self, features, num_frames):
        encoded, lengths = self.model.encode(features, num_frames)
        seconds = tf.cast(num_frames, tf.float32) * config.HOP_SECONDS
        return decoding.greedy_decode(self.model, encoded, lengths,
                                      decoding.max_tokens_for_duration(seconds))


def test_saved_model_round_trip(model, tmp_path):
    module = _Transcriber(model)
    features = tf.random.stateless_normal([2, 30, config.N_MELS], [6, 0])
    num_frames = tf.constant([30, 21], tf.int64)
    expected = module.transcribe(features, num_frames)
    tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    got = loaded.transcribe(features, num_frames)
    np.testing.assert_array_equal(got, expected)
    assert got.shape[1] <= config.MIN_DECODE_TOKENS
    # Another batch size and length through the same concrete function.
    other = loaded.transcribe(features[:1, :11], num_frames[:1] - 19)
    np.testing.assert_array_equal(
        other, module.transcribe(features[:1, :11], num_frames[:1] - 19))


# --- Beam search ------------------------------------------------------------

@pytest.mark.parametrize("max_tokens", [12, [12, 4, 0]])
def test_beam_width_one_is_greedy(model, encoded, max_tokens):
    enc, lengths = encoded
    np.testing.assert_array_equal(
        decoding.beam_search_decode(model, enc, lengths, max_tokens,
                                    beam_width=1),
        decoding.greedy_decode(model, enc, lengths, max_tokens))


def test_beam_search_runs_in_the_graph(model, encoded):
    enc, lengths = encoded
    fn = tf.function(lambda e, l: decoding.beam_search_decode(
        model, e, l, decoding.max_tokens_for_duration(0.2), beam_width=3,
        length_penalty=0.6))
    out = fn(enc, lengths)
    assert out.dtype == tf.int32 and out.shape[0] == 3
    assert out.shape[1] <= config.MIN_DECODE_TOKENS
    assert fn(enc[:1, :5], lengths[:1] * 0 + 5).shape[0] == 1
    with pytest.raises(ValueError, match="beam_width"):
        decoding.beam_search_decode(model, enc, lengths, 4, beam_width=0)


class _BigramDecoder:
    """Stand-in decoder whose next-token probabilities depend on the last
    token only: probs[last] = {token: p}."""

    def __init__(self, probs):
        table = np.full([V, V], 1e-12)
        for last, row in probs.items():
            for token, p in row.items():
                table[last, token] = p
        self.table = tf.constant(np.log(table), tf.float32)

    def cross_keys_values(self, encoded, lengths):
        return [], None

    def init_cache(self, batch, max_len):
        return [tf.zeros([batch, 1])]

    def step(self, tokens, t, cache, cross):
        return tf.gather(self.table, tokens), cache


class _BigramModel:
    def __init__(self, probs):
        self.decoder = _BigramDecoder(probs)


SOS = config.SOS_ID


def _decode_all(stub, beam_width, length_penalty=0.0, max_tokens=6):
    enc, lengths = tf.zeros([1, 1, 4]), tf.constant([1])
    greedy = decoding.greedy_decode(stub, enc, lengths, max_tokens)
    beam = decoding.beam_search_decode(stub, enc, lengths, max_tokens,
                                       beam_width, length_penalty)
    return greedy.numpy().tolist(), beam.numpy().tolist()


def test_beam_search_finds_what_greedy_misses():
    # Greedy takes 5 (0.6) then 7 (0.26): 0.156; 6 then </s> is 0.396.
    stub = _BigramModel({SOS: {5: 0.6, 6: 0.4},
                         5: {7: 0.26, 8: 0.25, 9: 0.25, 10: 0.24},
                         6: {EOS: 0.99, 9: 0.01},
                         7: {EOS: 1.0}})
    greedy, beam = _decode_all(stub, beam_width=2)
    assert greedy == [[5, 7, EOS]]
    assert beam == [[6, EOS, config.PAD_ID]]  # N = steps taken


def test_length_penalty_favours_longer_hypotheses():
    # "</s>" alone: log 0.5 = -0.69; "5 6 </s>": log(0.45 * 0.99 * 0.99) =
    # -0.82, but -0.27 per token.
    stub = _BigramModel({SOS: {EOS: 0.5, 5: 0.45, 9: 0.05},
                         5: {6: 0.99, 9: 0.01}, 6: {EOS: 0.99, 9: 0.01}})
    assert _decode_all(stub, 2, length_penalty=0.0)[1] == [[EOS, 0, 0]]
    assert _decode_all(stub, 2, length_penalty=1.0)[1] == [[5, 6, EOS]]


class _BabblingDecoder(_BigramDecoder):
    """Never emits </s>: what a model does on garbage audio at worst."""

    def __init__(self):
        super().__init__({t: {5 if t != 5 else 6: 1.0} for t in range(V)})


@pytest.mark.parametrize("use_cache", [True, False])
def test_duration_cap_stops_a_decoder_that_never_ends(use_cache):
    class Babbler(_BigramModel):
        def __init__(self):
            self.decoder = _BabblingDecoder()

        def decode(self, tokens, encoded, encoded_lengths):
            return tf.gather(self.decoder.table, tokens)

    stub = Babbler()
    seconds = tf.constant([0.1, 0.5, 2.0])
    caps = decoding.max_tokens_for_duration(seconds).numpy()
    assert list(caps) == [config.MIN_DECODE_TOKENS, 13, 50]
    enc, lengths = tf.zeros([3, 1, 4]), tf.constant([1, 1, 1])
    out = decoding.greedy_decode(stub, enc, lengths, caps,
                                 use_cache=use_cache).numpy()
    assert out.shape == (3, caps.max())
    for row, cap in zip(out, caps):
        assert EOS not in row
        assert np.all(row[:cap] != config.PAD_ID)  # babbled up to its cap
        assert np.all(row[cap:] == config.PAD_ID)  # and not a token more
    beam = decoding.beam_search_decode(stub, enc, lengths, caps,
                                       beam_width=3).numpy()
    assert beam.shape == (3, caps.max())
    np.testing.assert_array_equal(beam != config.PAD_ID,
                                  out != config.PAD_ID)


def _one_hot_frames(rows, vocab=V):
    """Logits [B, T, vocab] whose argmax per frame is rows[b][t] (rows
    padded with PAD)."""
    width = max(len(r) for r in rows)
    ids = [r + [config.PAD_ID] * (width - len(r)) for r in rows]
    return tf.one_hot(ids, vocab, on_value=5.0, off_value=0.0)


def test_ctc_best_path_merges_repeats_and_drops_blanks():
    from models import tflite

    from models import tokenizer

    blank = config.PAD_ID
    a, b = tokenizer.encode("AB", add_special_tokens=False)
    rows = [[a, a, blank, a, b, b, blank],  # "AAB": a blank splits the A's
            [blank, b, config.EOS_ID, config.SOS_ID, b, blank, a],  # "BBA"
            [a, b, a, b]]  # only the first 2 frames are valid: "AB"
    lengths = tf.constant([7, 7, 2])
    ids = decoding.ctc_best_path(_one_hot_frames(rows), lengths).numpy()
    eos, pad = config.EOS_ID, config.PAD_ID
    assert ids.tolist() == [[a, a, b, eos], [b, b, a, eos],
                            [a, b, eos, pad]]
    assert ids.dtype == np.int32
    # The host path (TFLite files) decodes each row the same.
    logits = _one_hot_frames(rows).numpy()
    for row, n, expected in zip(logits, lengths.numpy(), ids.tolist()):
        got = tflite.ctc_best_path(row, int(n)) + [eos]
        assert got == expected[:len(got)]
    # Nothing valid, or only blanks: </s> alone.
    assert decoding.ctc_best_path(_one_hot_frames([[blank, blank]]),
                                  tf.constant([2])).numpy().tolist() == [[eos]]
    assert decoding.ctc_best_path(_one_hot_frames([[a]]),
                                  tf.constant([0])).numpy().tolist() == [[eos]]


def test_ctc_best_path_of_the_models_head(model, encoded):
    """On the model's own CTC head: the argmax path of each row's valid
    frames, as a per-row reference computes it."""
    enc, lengths = encoded
    logits = model.ctc_logits(enc)
    ids = decoding.ctc_best_path(logits, lengths).numpy()
    for row, n, got in zip(logits.numpy(), lengths.numpy(), ids.tolist()):
        best = row[:n].argmax(-1).tolist()
        collapsed = [t for i, t in enumerate(best)
                     if (i == 0 or t != best[i - 1])
                     and t >= len(config.SPECIAL_TOKENS)]
        assert got[:len(collapsed) + 1] == collapsed + [config.EOS_ID]
        assert set(got[len(collapsed) + 1:]) <= {config.PAD_ID}


def test_decoding_method_is_checked_and_overridable():
    from tools import cli

    with pytest.raises(ValueError, match="unknown decoding method 'bogus'"):
        config.DecodeConfig(method="bogus")
    ci = config.get_preset("ci")
    assert ci.decode.method == config.ATTENTION_DECODING
    assert ci.with_overrides(decoding=config.CTC_DECODING
                             ).decode.method == config.CTC_DECODING
    # An untrained CTC head would decode noise: refused up front.
    untrained = dataclasses.replace(
        ci, train=dataclasses.replace(ci.train, ctc_weight=0.0))
    with pytest.raises(ValueError, match="ctc_weight > 0"):
        untrained.with_overrides(decoding=config.CTC_DECODING)
    options = cli.options_from_args(cli.build_parser().parse_args(
        ["run", "--preset", "ci", "--decoding", "ctc"]))
    assert options.preset.decode == dataclasses.replace(
        ci.decode, method=config.CTC_DECODING)
    # Round trip through the JSON the ModelExporter is given.
    assert config.preset_from_dict(config.preset_to_dict(
        options.preset)).decode.method == config.CTC_DECODING
