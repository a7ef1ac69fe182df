"""The Moonshine model: shapes, masks, parameter counts, graph friendliness."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import config
from models import moonshine

# Tiny dims; head_dim 40 > rotary_dim 32 exercises the partial rotary.
SMALL = config.ModelConfig(dim=80, ffn_dim=96, n_heads=2, enc_layers=2,
                           dec_layers=2, dropout=0.0)
SMALL_WAVE = dataclasses.replace(SMALL, frontend="waveform")
SR = config.SAMPLE_RATE


@pytest.fixture(scope="module")
def mel_model():
    keras.utils.set_random_seed(0)
    return moonshine.Moonshine(SMALL)


@pytest.fixture(scope="module")
def wave_model():
    keras.utils.set_random_seed(1)
    return moonshine.Moonshine(SMALL_WAVE)


def _mel(batch, frames, seed=0):
    return tf.random.stateless_normal([batch, frames, config.N_MELS], [seed, 1])


def _audio(batch, samples, seed=0):
    return 0.3 * tf.random.stateless_normal([batch, samples], [seed, 2])


def _tokens(batch, length, seed=0):
    return tf.random.stateless_uniform([batch, length], [seed, 3], minval=3,
                                       maxval=config.VOCAB_SIZE, dtype=tf.int32)


def test_rotary_dim_is_partial_for_the_small_config():
    assert SMALL.head_dim == 40 and SMALL.rotary_dim == 32


def test_log_mel_shapes(mel_model):
    lengths = tf.constant([50, 37])
    encoded, encoded_lengths = mel_model.encode(_mel(2, 50), lengths)
    # Two stride-2 'same' convs: ceil(ceil(n / 2) / 2).
    assert encoded.shape == (2, 13, SMALL.dim)
    assert encoded_lengths.dtype == tf.int32
    np.testing.assert_array_equal(encoded_lengths, [13, 10])
    np.testing.assert_array_equal(
        moonshine.output_lengths(SMALL, lengths), [13, 10])
    logits = mel_model.decode(_tokens(2, 7), encoded, encoded_lengths)
    assert logits.shape == (2, 7, config.VOCAB_SIZE)
    logits = mel_model({"features": _mel(2, 50), "lengths": lengths,
                        "tokens": _tokens(2, 7)})
    assert logits.shape == (2, 7, config.VOCAB_SIZE)


def test_waveform_shapes(wave_model):
    lengths = tf.constant([SR, SR // 2], tf.int64)  # int64 as serving passes
    encoded, encoded_lengths = wave_model.encode(_audio(2, SR), lengths)
    # (16000 - 127) // 64 + 1 = 249; (249 - 7) // 3 + 1 = 81; (81 - 3) // 2 + 1 = 40
    assert encoded.shape == (2, 40, SMALL.dim)
    np.testing.assert_array_equal(encoded_lengths, [40, 19])
    np.testing.assert_array_equal(
        moonshine.Moonshine.output_lengths(SMALL_WAVE, lengths), [40, 19])
    logits = wave_model.decode(_tokens(2, 5), encoded, encoded_lengths)
    assert logits.shape == (2, 5, config.VOCAB_SIZE)


def test_output_lengths_match_the_convolutions():
    for cfg, sizes in ((SMALL, [1, 2, 3, 4, 5, 9, 100, 101]),
                       (SMALL_WAVE, [0, 100, 894, 895, 1000, 16000, 16383])):
        got = moonshine.output_lengths(cfg, tf.constant(sizes)).numpy()
        for n, frames in zip(sizes, got):
            expected = n
            if cfg.frontend == "log_mel":
                for _ in range(cfg.conv_layers):
                    expected = -(-expected // cfg.conv_stride)
            else:
                for kernel, stride in moonshine.WAVEFORM_STEM:
                    expected = max((expected - kernel) // stride + 1, 0)
            assert frames == expected, (cfg.frontend, n)


def test_short_inputs_do_not_crash(mel_model, wave_model):
    encoded, lengths = wave_model.encode(_audio(1, 400), tf.constant([400]))
    assert lengths.numpy().tolist() == [0]  # shorter than one frame's field
    logits = wave_model.decode(_tokens(1, 3), encoded, lengths)
    assert np.all(np.isfinite(logits))
    encoded, lengths = mel_model.encode(_mel(1, 1), tf.constant([1]))
    assert encoded.shape[1] == 1 and lengths.numpy().tolist() == [1]


def test_decoder_is_causal(mel_model):
    encoded, lengths = mel_model.encode(_mel(2, 40), tf.constant([40, 30]))
    tokens = _tokens(2, 9).numpy()
    changed = tokens.copy()
    changed[:, 5:] = (changed[:, 5:] + 7) % config.VOCAB_SIZE
    a = mel_model.decode(tokens, encoded, lengths).numpy()
    b = mel_model.decode(changed, encoded, lengths).numpy()
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-4


@pytest.mark.parametrize("frontend", ["log_mel", "waveform"])
def test_encoder_ignores_padding(frontend, mel_model, wave_model):
    model = mel_model if frontend == "log_mel" else wave_model
    if frontend == "log_mel":
        n, x = 41, _mel(1, 64, seed=5)
    else:
        n, x = 12_345, _audio(1, 17_345, seed=5)
    alone, alone_len = model.encode(x[:, :n], tf.constant([n]))
    # Garbage (not zeros) past the end: the model must not look at it.
    padded, padded_len = model.encode(x, tf.constant([n]))
    valid = int(alone_len[0])
    assert int(padded_len[0]) == valid and padded.shape[1] > valid
    np.testing.assert_allclose(padded[:, :valid], alone, atol=1e-5)
    np.testing.assert_array_equal(padded[:, valid:], 0.0)


def test_cross_attention_ignores_padded_frames(mel_model):
    x = _mel(2, 60, seed=7)
    tokens = _tokens(2, 6, seed=7)
    batch_enc, batch_len = mel_model.encode(x, tf.constant([60, 33]))
    batch_logits = mel_model.decode(tokens, batch_enc, batch_len)
    enc, length = mel_model.encode(x[1:, :33], tf.constant([33]))
    logits = mel_model.decode(tokens[1:], enc, length)
    np.testing.assert_allclose(batch_logits[1:], logits, atol=1e-5)


def test_dropout_only_in_training():
    model = moonshine.Moonshine(dataclasses.replace(SMALL, dropout=0.5,
                                                    enc_layers=1, dec_layers=1))
    inputs = {"features": _mel(1, 20), "lengths": tf.constant([20]),
              "tokens": _tokens(1, 4)}
    np.testing.assert_array_equal(model(inputs), model(inputs))
    assert np.abs(model(inputs, training=True) - model(inputs)).max() > 1e-3


def test_runs_in_tf_function_with_dynamic_shapes(mel_model):
    @tf.function(input_signature=[
        tf.TensorSpec([None, None, config.N_MELS], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None, None], tf.int32)])
    def logits_fn(features, lengths, tokens):
        encoded, encoded_lengths = mel_model.encode(features, lengths)
        return mel_model.decode(tokens, encoded, encoded_lengths)

    for batch, frames, length in ((1, 17, 3), (3, 40, 8)):
        x, toks = _mel(batch, frames), _tokens(batch, length)
        lengths = tf.fill([batch], frames)
        np.testing.assert_allclose(
            logits_fn(x, lengths, toks),
            mel_model({"features": x, "lengths": lengths, "tokens": toks}),
            atol=1e-5)


def test_get_config_round_trip(mel_model):
    rebuilt = moonshine.Moonshine.from_config(mel_model.get_config())
    assert rebuilt.model_config == SMALL
    assert rebuilt.count_params() == mel_model.count_params()
    assert mel_model.get_config()["config"] == dataclasses.asdict(SMALL)


def test_rejects_unknown_frontend():
    with pytest.raises(ValueError, match="front end"):
        moonshine.Moonshine(dataclasses.replace(SMALL, frontend="spectrogram"))


def _expected_params(c: config.ModelConfig) -> int:
    """Recount from the layer list of the published architecture."""
    d, f, inner, v = c.dim, c.ffn_dim, c.n_heads * c.head_dim, c.vocab_size
    if c.frontend == "waveform":
        (k1, _), (k2, _), (k3, _) = moonshine.WAVEFORM_STEM
        stem = k1 * d + 2 * d + (k2 * d * 2 * d + 2 * d) + (k3 * 2 * d * d + d)
    else:
        stem = (c.conv_kernel * c.n_mels * d + d
                + (c.conv_layers - 1) * (c.conv_kernel * d * d + d))
    attention = 4 * d * inner
    encoder_layer = 2 * d + attention + (d * f + f) + (f * d + d)
    decoder_layer = 3 * d + 2 * attention + (d * 2 * f + 2 * f) + (f * d + d)
    return (stem + c.enc_layers * encoder_layer + d
            + v * d + c.dec_layers * decoder_layer + d)


@pytest.mark.parametrize("preset", ["tiny", "base"])
@pytest.mark.parametrize("frontend", ["log_mel", "waveform"])
def test_parameter_counts_follow_the_architecture(preset, frontend):
    cfg = dataclasses.replace(config.get_preset(preset).model, frontend=frontend)
    assert moonshine.Moonshine(cfg).count_params() == _expected_params(cfg)


@pytest.mark.parametrize("preset,official", [("tiny", 27_092_736),
                                             ("base", 61_513_920)])
def test_paper_architecture_has_the_official_parameter_count(preset, official):
    cfg = dataclasses.replace(config.get_preset(preset).model,
                              frontend="waveform", vocab_size=32_768)
    model = moonshine.Moonshine(cfg)
    assert model.count_params() == official
    # No hidden non-trainable state (the rotary frequencies are computed).
    assert not model.non_trainable_weights


def test_sinusoids_are_whispers():
    """The absolute position codes equal Whisper's `sinusoids` (audio
    encoder), written out here in NumPy."""
    length, channels = 50, 80
    increment = np.log(10_000.0) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    want = np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)
    np.testing.assert_allclose(moonshine.sinusoids(length, channels), want,
                               atol=1e-5)


def test_absolute_positions_tell_the_encoder_where_a_frame_is():
    """The same frame repeated 200 times: with rotary positions alone the
    encoder sees (away from the edges) nearly the same thing everywhere, as
    attention scores depend only on offsets; with absolute positions each
    frame's encoding says where it is. Padding is ignored either way."""
    keras.utils.set_random_seed(0)
    rotary_only = moonshine.Moonshine(SMALL)
    keras.utils.set_random_seed(0)
    absolute = moonshine.Moonshine(dataclasses.replace(
        SMALL, absolute_positions=True))
    assert len(absolute.weights) == len(rotary_only.weights)  # no new weights
    frames = 200
    x = tf.tile(_mel(1, 1, seed=2), [1, frames, 1])

    def spread(model):  # across the middle frames, per channel, then mean
        encoded, _ = model.encode(x, tf.constant([frames]))
        return float(tf.reduce_mean(tf.math.reduce_std(
            encoded[0, 10:40], axis=0)))
    assert spread(absolute) > 10 * spread(rotary_only)
    n, noisy = 41, _mel(1, 64, seed=5)
    alone, _ = absolute.encode(noisy[:, :n], tf.constant([n]))
    padded, length = absolute.encode(noisy, tf.constant([n]))
    np.testing.assert_allclose(padded[:, :int(length[0])], alone, atol=1e-5)
