"""The Moonshine encoder-decoder (arXiv 2410.15608) as small tf_keras layers.

Follows the official Keras model (useful-moonshine's `moonshine/model.py`):
pre-norm blocks with scale-only LayerNorm (eps 1e-5) and a final norm in the
encoder and the decoder; rotary embeddings (base 10000, interleaved GPT-J
pairs) on the first `config.rotary_dim` dims of each head in encoder
self-attention and decoder causal self-attention, none in cross-attention;
q/k/v/o without bias; encoder FFN Dense -> exact GELU -> Dense, decoder FFN
SwiGLU; the output projection tied to the token embedding.

Two departures from the official code, both for batched training and serving:
every attention is masked by per-example lengths (the official model runs one
utterance at a time, unmasked), and the waveform stem's GroupNorm takes its
statistics over valid frames only, so padding an utterance changes nothing at
its valid positions.

Two front ends (`config.frontend`):
- 'log_mel' (the seed's): log-mel [B, T, n_mels] -> `conv_layers` x
  (Conv1D(dim, conv_kernel, conv_stride, 'same') -> GELU). 'same' pads a fixed
  (kernel - 1) // 2 frames on the left and zeros every frame past an example's
  end, so frame alignment does not depend on how far the batch is padded.
- 'waveform' (the paper's): audio [B, samples] -> Conv1D(dim, 127, 64, no
  bias) -> tanh -> GroupNorm(1) -> Conv1D(2 dim, 7, 3) -> GELU ->
  Conv1D(dim, 3, 2) -> GELU, all 'valid'.
Neither adds a positional embedding: position comes from the rotary embedding,
unless `config.absolute_positions` adds Whisper's sinusoids to the encoder's
input frames (a departure from the paper, for small corpora).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from models import config as cfg
from models.config import ModelConfig

# Architecture constants of the published model (not tunable sizes).
NORM_EPSILON = 1e-5
# (kernel, stride) of the paper's three 'valid' convolutions over raw audio.
WAVEFORM_STEM: Tuple[Tuple[int, int], ...] = ((127, 64), (7, 3), (3, 2))
_MASKED = -1e9  # attention score of a masked key (finite: no NaN rows)

Rotary = Tuple[tf.Tensor, tf.Tensor]  # (cos, sin), each [T, rotary_dim]


def _no_autograph(fn):
    """tf.autograph's do_not_convert, keeping fn's signature for tf_keras.

    Autograph skips the 'keras' package but not 'tf_keras', so a traced call
    would transpile tf_keras's internals (seconds per trace and per
    SavedModel export). Nothing here has Python control flow on tensors.
    """
    wrapper = tf.autograph.experimental.do_not_convert(fn)
    wrapper.__signature__ = inspect.signature(fn)  # tf_keras reads call args
    return wrapper


# --- Lengths and masks ------------------------------------------------------

def _receptive_field(stem: Sequence[Tuple[int, int]]) -> int:
    """Input samples that one output frame of a 'valid' conv stack needs."""
    field = 1
    for kernel, stride in reversed(stem):
        field = (field - 1) * stride + kernel
    return field


WAVEFORM_MIN_SAMPLES = _receptive_field(WAVEFORM_STEM)  # 895


def _conv_lengths(config: ModelConfig, lengths) -> List[tf.Tensor]:
    """Valid lengths after each conv of the front end (input first)."""
    n = tf.cast(lengths, tf.int32)
    out = [n]
    if config.frontend == cfg.LOG_MEL_FRONTEND:
        for _ in range(config.conv_layers):
            n = (n + config.conv_stride - 1) // config.conv_stride
            out.append(n)
    else:  # cfg.WAVEFORM_FRONTEND (ModelConfig admits no other)
        for kernel, stride in WAVEFORM_STEM:
            n = tf.maximum((n - kernel) // stride + 1, 0)
            out.append(n)
    return out


def output_lengths(config: ModelConfig, lengths) -> tf.Tensor:
    """Encoder frames (int32) for input lengths (frames or samples)."""
    return _conv_lengths(config, lengths)[-1]


def sequence_mask(lengths, max_len) -> tf.Tensor:
    """bool [B, max_len]: True at the valid positions of each row."""
    return tf.sequence_mask(tf.cast(lengths, tf.int32), max_len)


def _zero_padding(x: tf.Tensor, lengths) -> tf.Tensor:
    return x * tf.cast(sequence_mask(lengths, tf.shape(x)[1]), x.dtype)[..., None]


def _pad_time(x: tf.Tensor, left, right) -> tf.Tensor:
    """x [B, T, C] with left and right zero frames added."""
    channels = x.shape[-1]
    x = tf.pad(x, [[0, 0], [left, right], [0, 0]])
    # Padding by a computed amount loses every static dim in the graph;
    # TFLite's conv needs the (unchanged) channels static.
    return tf.reshape(x, [-1, tf.shape(x)[1], channels])


def _gelu(x):
    return tf.nn.gelu(x, approximate=False)


# --- Rotary embeddings ------------------------------------------------------

def rotary_angles(positions, rotary_dim: int, base: float) -> Rotary:
    """cos, sin [T, rotary_dim]; the two dims of a pair share a frequency."""
    inv_freq = 1.0 / (base ** (
        tf.range(0, rotary_dim, 2, dtype=tf.float32) / rotary_dim))
    angles = tf.cast(positions, tf.float32)[:, None] * inv_freq[None, :]
    angles = tf.repeat(angles, 2, axis=-1)  # [f0, f0, f1, f1, ...]
    return tf.cos(angles), tf.sin(angles)


def sinusoids(length, channels: int, max_timescale: float = 10_000.0
              ) -> tf.Tensor:
    """[length, channels] sin | cos absolute position codes (Whisper's
    `sinusoids`, its geometric timescales from 1 to max_timescale)."""
    half = channels // 2
    increment = tf.math.log(max_timescale) / (half - 1)
    inv_timescales = tf.exp(-increment * tf.range(half, dtype=tf.float32))
    scaled = (tf.cast(tf.range(length), tf.float32)[:, None]
              * inv_timescales[None, :])
    return tf.concat([tf.sin(scaled), tf.cos(scaled)], axis=1)


def apply_rotary(x: tf.Tensor, rotary: Rotary) -> tf.Tensor:
    """Rotates interleaved pairs of x[..., :rotary_dim]; x is [B, H, T, D]."""
    # Angles are float32 whatever the compute dtype (positions past 256 are
    # not exact in bfloat16); only the rotation runs in x's dtype.
    cos, sin = (tf.cast(r, x.dtype) for r in rotary)
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    pairs = tf.reshape(x_rot, tf.concat([tf.shape(x_rot)[:-1], [rot // 2, 2]], 0))
    half = tf.reshape(tf.stack([-pairs[..., 1], pairs[..., 0]], axis=-1),
                      tf.shape(x_rot))
    return tf.concat([x_rot * cos + half * sin, x_pass], axis=-1)


# --- Building blocks --------------------------------------------------------

def _layer_norm(name: str) -> keras.layers.LayerNormalization:
    """Scale-only LayerNorm, as the official model (no bias)."""
    return keras.layers.LayerNormalization(
        epsilon=NORM_EPSILON, center=False, scale=True, name=name)


class Attention(keras.layers.Layer):
    """Multi-head attention, q/k/v/o without bias, optional rotary on q, k."""

    def __init__(self, dim: int, n_heads: int, head_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.n_heads, self.head_dim = n_heads, head_dim
        inner = n_heads * head_dim
        self.q_proj = keras.layers.Dense(inner, use_bias=False, name="query")
        self.k_proj = keras.layers.Dense(inner, use_bias=False, name="key")
        self.v_proj = keras.layers.Dense(inner, use_bias=False, name="value")
        self.o_proj = keras.layers.Dense(dim, use_bias=False, name="output")

    def _split_heads(self, x):  # [B, T, H * D] -> [B, H, T, D]
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, tf.stack([b, t, self.n_heads, self.head_dim]))
        return tf.transpose(x, [0, 2, 1, 3])

    def query(self, x, rotary: Optional[Rotary] = None):
        q = self._split_heads(self.q_proj(x))
        return q if rotary is None else apply_rotary(q, rotary)

    def keys_values(self, context, rotary: Optional[Rotary] = None):
        k = self._split_heads(self.k_proj(context))
        v = self._split_heads(self.v_proj(context))
        return (k if rotary is None else apply_rotary(k, rotary)), v

    def scores(self, q, k):
        """Scaled q k^T [B, H, Tq, Tk], float32."""
        # Softmax in float32 under mixed precision: _MASKED overflows
        # float16, and bfloat16 sums of many small weights lose mass.
        return tf.cast(tf.matmul(q, k, transpose_b=True),
                       tf.float32) * (self.head_dim ** -0.5)

    def output(self, x):
        """Heads [B, H, Tq, D] -> [B, Tq, dim]."""
        x = tf.transpose(x, [0, 2, 1, 3])
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        return self.o_proj(tf.reshape(
            x, tf.stack([b, t, self.n_heads * self.head_dim])))

    def attend(self, q, k, v, attention_mask=None):
        """attention_mask: bool, broadcastable to [B, H, Tq, Tk]."""
        scores = self.scores(q, k)
        if attention_mask is not None:
            scores = tf.where(attention_mask, scores, _MASKED)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), v.dtype)
        return self.output(tf.matmul(weights, v))

    @_no_autograph
    def call(self, x, context, attention_mask=None, rotary=None):
        k, v = self.keys_values(context, rotary)
        return self.attend(self.query(x, rotary), k, v, attention_mask)


class GeluFFN(keras.layers.Layer):
    """Encoder FFN: Dense -> exact GELU -> Dense, with biases."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(ffn_dim, name="up")
        self.down = keras.layers.Dense(dim, name="down")
        self.dropout = keras.layers.Dropout(dropout)

    @_no_autograph
    def call(self, x, training=False):
        return self.down(self.dropout(_gelu(self.up(x)), training=training))


class SwiGLU(keras.layers.Layer):
    """Decoder FFN: Dense to 2 ffn_dim -> first half * silu(second) -> Dense."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(2 * ffn_dim, name="up")
        self.down = keras.layers.Dense(dim, name="down")
        self.dropout = keras.layers.Dropout(dropout)

    @_no_autograph
    def call(self, x, training=False):
        x, gate = tf.split(self.up(x), 2, axis=-1)
        return self.down(self.dropout(x * tf.nn.silu(gate), training=training))


class EncoderLayer(keras.layers.Layer):
    """Pre-norm: x + Attn(LN(x)) with rotary, then x + FFN(LN(x))."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = _layer_norm("norm1")
        self.attention = Attention(config.dim, config.n_heads, config.head_dim,
                                   name="attention")
        self.norm2 = _layer_norm("norm2")
        self.ffn = GeluFFN(config.dim, config.ffn_dim, config.dropout, name="ffn")
        self.dropout = keras.layers.Dropout(config.dropout)

    @_no_autograph
    def call(self, x, attention_mask, rotary, training=False):
        h = self.norm1(x)
        h = self.attention(h, h, attention_mask=attention_mask, rotary=rotary)
        x = x + self.dropout(h, training=training)
        h = self.ffn(self.norm2(x), training=training)
        return x + self.dropout(h, training=training)


class DecoderLayer(keras.layers.Layer):
    """Pre-norm: causal self-attn (rotary), cross-attn (no rotary), SwiGLU."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dim, heads, head_dim = config.dim, config.n_heads, config.head_dim
        self.norm1 = _layer_norm("norm1")
        self.self_attention = Attention(dim, heads, head_dim, name="self_attention")
        self.norm2 = _layer_norm("norm2")
        self.cross_attention = Attention(dim, heads, head_dim,
                                         name="cross_attention")
        self.norm3 = _layer_norm("norm3")
        self.ffn = SwiGLU(dim, config.ffn_dim, config.dropout, name="ffn")
        self.dropout = keras.layers.Dropout(config.dropout)

    @_no_autograph
    def call(self, x, context, causal_mask, cross_mask, rotary, training=False):
        h = self.norm1(x)
        h = self.self_attention(h, h, attention_mask=causal_mask, rotary=rotary)
        x = x + self.dropout(h, training=training)
        h = self.cross_attention(self.norm2(x), context, attention_mask=cross_mask)
        x = x + self.dropout(h, training=training)
        h = self.ffn(self.norm3(x), training=training)
        return x + self.dropout(h, training=training)

    def step(self, x, t, rotary, cache: Tuple[tf.Tensor, tf.Tensor],
             cross: Tuple[tf.Tensor, tf.Tensor], cross_mask):
        """One position t: x [B, 1, dim]; cache k, v [B, H, max_len, D],
        written with a scatter, attended over the prefix."""
        h = self.norm1(x)
        k, v = self.self_attention.keys_values(h, rotary)
        cache_k = _write_cache(cache[0], k, t)
        cache_v = _write_cache(cache[1], v, t)
        q = self.self_attention.query(h, rotary)
        h = self.self_attention.attend(q, cache_k[:, :, :t + 1],
                                       cache_v[:, :, :t + 1])
        x = x + h
        h = self.norm2(x)
        x = x + self.cross_attention.attend(
            self.cross_attention.query(h), cross[0], cross[1], cross_mask)
        return x + self.ffn(self.norm3(x)), (cache_k, cache_v)

    def step_beside_cache(self, x, t, rotary,
                          cache: Tuple[tf.Tensor, tf.Tensor],
                          cross: Tuple[tf.Tensor, tf.Tensor]):
        """step for a host that keeps the cache (models/tflite.py), one
        utterance: x [1, 1, dim]; cache (keys [1, H, L, D], values
        transposed [1, H, D, L]) valid before t, any L >= t; cross (keys
        [1, H, F, D], values transposed [1, H, D, F]), every frame valid.
        Returns x and position t's (k, v), each [1, H, 1, D], for the host
        to store.

        Position t attends to itself beside the cache rather than being
        written into it, so the cache is only read: a step costs what the
        cache's length L costs, not a write and a copy of the whole cache.
        Both value matmuls take their right operand transposed, the layout
        TFLite's BATCH_MATMUL multiplies without transposing it each call.
        """
        attention = self.self_attention
        h = self.norm1(x)
        k, v = attention.keys_values(h, rotary)
        q = attention.query(h, rotary)
        cached = tf.where(tf.range(tf.shape(cache[0])[2]) < t,
                          attention.scores(q, cache[0]), _MASKED)
        weights = tf.cast(tf.nn.softmax(
            tf.concat([cached, attention.scores(q, k)], -1)), v.dtype)
        h = (tf.matmul(weights[..., :-1], cache[1], transpose_b=True)
             + weights[..., -1:] * v)
        x = x + attention.output(h)
        attention = self.cross_attention
        weights = tf.cast(tf.nn.softmax(attention.scores(
            attention.query(self.norm2(x)), cross[0])), cross[1].dtype)
        x = x + attention.output(tf.matmul(weights, cross[1],
                                           transpose_b=True))
        return x + self.ffn(self.norm3(x)), (k, v)


def _write_cache(cache: tf.Tensor, new: tf.Tensor, t) -> tf.Tensor:
    """cache [B, H, M, D] with position t set to new [B, H, 1, D]."""
    shape = tf.shape(cache)
    b, h = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
    index = tf.stack([b, h, tf.fill(tf.shape(b), tf.cast(t, tf.int32))], -1)
    return tf.tensor_scatter_nd_update(cache, index, new[:, :, 0])


# --- Front ends -------------------------------------------------------------

class LogMelFrontend(keras.layers.Layer):
    """The seed's stem: conv_layers x (Conv1D 'same' -> GELU) over log-mel."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.convs = [
            keras.layers.Conv1D(config.dim, config.conv_kernel,
                                strides=config.conv_stride, padding="valid",
                                name=f"conv{i + 1}")
            for i in range(config.conv_layers)]

    @_no_autograph
    def call(self, x, lengths):
        kernel = self.config.conv_kernel
        left = (kernel - 1) // 2
        all_lengths = _conv_lengths(self.config, lengths)
        for conv, n in zip(self.convs, all_lengths):
            x = _zero_padding(x, n)  # what 'same' sees past an example's end
            # At least one output frame even for an all-empty batch.
            right = kernel - 1 - left + tf.maximum(1 - tf.shape(x)[1], 0)
            x = _gelu(conv(_pad_time(x, left, right)))
        return x, all_lengths[-1]


class MaskedGroupNorm(keras.layers.Layer):
    """GroupNormalization(groups=1): statistics over valid frames only."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight("gamma", [channels], initializer="ones")
        self.beta = self.add_weight("beta", [channels], initializer="zeros")
        super().build(input_shape)

    @_no_autograph
    def call(self, x, valid):
        # Statistics over thousands of frames need float32 under mixed
        # precision, as Keras' own normalisation layers do.
        compute_dtype, x = x.dtype, tf.cast(x, tf.float32)
        m = tf.cast(valid, x.dtype)[..., None]  # [B, T, 1]
        count = tf.maximum(tf.reduce_sum(m, [1, 2], keepdims=True)
                           * tf.cast(tf.shape(x)[-1], x.dtype), 1.0)
        mean = tf.reduce_sum(x * m, [1, 2], keepdims=True) / count
        var = tf.reduce_sum(tf.square((x - mean) * m), [1, 2], keepdims=True) / count
        x = (x - mean) * tf.math.rsqrt(var + NORM_EPSILON)
        return tf.cast(x * tf.cast(self.gamma, x.dtype)
                       + tf.cast(self.beta, x.dtype), compute_dtype)


class WaveformFrontend(keras.layers.Layer):
    """The paper's stem over raw 16 kHz audio [B, samples], 384x downsampling."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        (k1, s1), (k2, s2), (k3, s3) = WAVEFORM_STEM
        dim = config.dim
        self.conv1 = keras.layers.Conv1D(dim, k1, strides=s1, use_bias=False,
                                         name="conv1")
        self.norm = MaskedGroupNorm(name="group_norm")
        self.conv2 = keras.layers.Conv1D(2 * dim, k2, strides=s2, name="conv2")
        self.conv3 = keras.layers.Conv1D(dim, k3, strides=s3, name="conv3")

    @_no_autograph
    def call(self, audio, lengths):
        all_lengths = _conv_lengths(self.config, lengths)
        x = audio[..., None]
        # At least one output frame even for an all-short batch.
        short = tf.maximum(WAVEFORM_MIN_SAMPLES - tf.shape(x)[1], 0)
        x = tf.tanh(self.conv1(_pad_time(x, 0, short)))
        x = self.norm(x, sequence_mask(all_lengths[1], tf.shape(x)[1]))
        x = _gelu(self.conv2(x))
        return _gelu(self.conv3(x)), all_lengths[-1]


# --- Encoder and decoder ----------------------------------------------------

class Encoder(keras.layers.Layer):
    """Front end -> layers of masked self-attention -> final norm."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        frontend = (LogMelFrontend if config.frontend == cfg.LOG_MEL_FRONTEND
                    else WaveformFrontend)
        self.frontend = frontend(config, name=f"{config.frontend}_frontend")
        self.blocks = [EncoderLayer(config, name=f"layer{i}")
                       for i in range(config.enc_layers)]
        self.norm = _layer_norm("final_norm")

    @_no_autograph
    def call(self, inputs, lengths, training=False):
        x, lengths = self.frontend(inputs, lengths)
        frames = tf.shape(x)[1]
        if self.config.absolute_positions:
            x = x + tf.cast(sinusoids(frames, self.config.dim), x.dtype)
        valid = sequence_mask(lengths, frames)
        rotary = rotary_angles(tf.range(frames), self.config.rotary_dim,
                               self.config.rope_base)
        for block in self.blocks:
            x = block(x, valid[:, None, None, :], rotary, training=training)
        # Zero past each example's end: nothing downstream sees padding.
        return _zero_padding(self.norm(x), lengths), lengths


class Decoder(keras.layers.Layer):
    """Token embedding -> causal layers -> final norm -> tied output."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embedding = keras.layers.Embedding(config.vocab_size, config.dim,
                                                name="embedding")
        self.blocks = [DecoderLayer(config, name=f"layer{i}")
                       for i in range(config.dec_layers)]
        self.norm = _layer_norm("final_norm")

    def _logits(self, x):
        x = self.norm(x)
        # The tied table is a float32 variable; under mixed precision the
        # matmul runs in the compute dtype (the Trainer casts logits back).
        return tf.matmul(x, tf.cast(self.embedding.embeddings, x.dtype),
                         transpose_b=True)

    def _rotary(self, positions):
        return rotary_angles(positions, self.config.rotary_dim,
                             self.config.rope_base)

    @_no_autograph
    def call(self, tokens, context, context_lengths, training=False):
        length = tf.shape(tokens)[1]
        positions = tf.range(length)
        causal = positions[:, None] >= positions[None, :]  # [L, L]
        cross = sequence_mask(context_lengths, tf.shape(context)[1])[:, None, None, :]
        rotary = self._rotary(positions)
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x, context, causal, cross, rotary, training=training)
        return self._logits(x)

    # Incremental decoding (see models/decoding.py).
    def cross_keys_values(self, context, context_lengths):
        """Per-layer cross-attention (k, v), computed once, and their mask."""
        kv = [b.cross_attention.keys_values(context) for b in self.blocks]
        mask = sequence_mask(context_lengths, tf.shape(context)[1])
        return kv, mask[:, None, None, :]

    def init_cache(self, batch, max_len):
        """Per-layer self-attention (k, v) caches, [B, H, max_len, D] zeros."""
        shape = tf.stack([batch, self.config.n_heads, max_len, self.config.head_dim])
        return [(tf.zeros(shape), tf.zeros(shape)) for _ in self.blocks]

    def step(self, tokens, t, cache, cross):
        """tokens [B] at position t -> (logits [B, vocab], updated cache)."""
        kv, mask = cross
        rotary = self._rotary(tf.reshape(t, [1]))
        x = self.embedding(tokens[:, None])
        new_cache = []
        for block, layer_cache, layer_cross in zip(self.blocks, cache, kv):
            x, layer_cache = block.step(x, t, rotary, layer_cache, layer_cross,
                                        mask)
            new_cache.append(layer_cache)
        return self._logits(x)[:, 0], new_cache

    def step_beside_cache(self, tokens, t, cache, cross):
        """tokens [1] at position t -> (logits [1, vocab], position t's
        (k, v) per layer); cache and cross per layer, as
        DecoderLayer.step_beside_cache takes them."""
        rotary = self._rotary(tf.reshape(t, [1]))
        x = self.embedding(tokens[:, None])
        new = []
        for block, layer_cache, layer_cross in zip(self.blocks, cache, cross):
            x, kv = block.step_beside_cache(x, t, rotary, layer_cache,
                                            layer_cross)
            new.append(kv)
        return self._logits(x)[:, 0], new


# --- The model --------------------------------------------------------------

class Moonshine(keras.Model):
    """Moonshine speech-to-text: encode(audio features) -> decode(tokens)."""

    def __init__(self, config: ModelConfig, with_ctc_head: bool = False,
                 **kwargs):
        if isinstance(config, dict):
            config = ModelConfig(**config)
        _check_config(config)
        kwargs.setdefault("name", "moonshine")
        super().__init__(**kwargs)
        self.model_config = config
        self.encoder = Encoder(config, name="encoder")
        self.decoder = Decoder(config, name="decoder")
        # Per-frame token logits over the encoder (the blank is PAD's id:
        # PAD never appears inside a label): training's auxiliary CTC loss,
        # and CTC decoding (config.CTC_DECODING). Not in the official model,
        # and only where asked for: with a 32k vocabulary it is a third of
        # tiny's parameters.
        self.ctc_head = (keras.layers.Dense(config.vocab_size,
                                            name="ctc_head")
                         if with_ctc_head else None)
        self._build_weights()

    output_lengths = staticmethod(output_lengths)

    @_no_autograph
    def encode(self, inputs, lengths, training=False):
        """-> (encoded [B, T', dim], encoded_lengths [B] int32)."""
        return self.encoder(inputs, lengths, training=training)

    @_no_autograph
    def decode(self, tokens, encoded, encoded_lengths, training=False):
        """Teacher forcing: tokens [B, L] -> logits [B, L, vocab_size]."""
        return self.decoder(tokens, encoded, encoded_lengths, training=training)

    @_no_autograph
    def ctc_logits(self, encoded):
        """encoded [B, T', dim] -> CTC logits [B, T', vocab_size]."""
        return self.ctc_head(encoded)

    @_no_autograph
    def call(self, inputs, training=False):
        encoded, lengths = self.encode(inputs["features"], inputs["lengths"],
                                       training=training)
        return self.decode(inputs["tokens"], encoded, lengths, training=training)

    def _build_weights(self):
        """Creates every variable now (never inside a tf.while_loop later)."""
        c = self.model_config
        length = (1 if c.frontend == cfg.LOG_MEL_FRONTEND
                  else WAVEFORM_MIN_SAMPLES)
        shape = [1, length] + ([] if c.front_end.channels is None
                               else [c.front_end.channels])
        features = tf.zeros(shape)
        with tf.init_scope():
            self({"features": features, "lengths": tf.constant([length]),
                  "tokens": tf.constant([[cfg.SOS_ID]])})
            if self.ctc_head is not None:  # over the encoder's dim
                self.ctc_head.build([None, c.dim])

    def get_config(self):
        return {"config": dataclasses.asdict(self.model_config),
                "with_ctc_head": self.ctc_head is not None, "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        return cls(ModelConfig(**config.pop("config")), **config)


def _check_config(config: ModelConfig) -> None:
    if config.head_dim < 1 or config.rotary_dim % 2:
        raise ValueError(
            f"dim {config.dim} / n_heads {config.n_heads} gives head_dim "
            f"{config.head_dim} and rotary_dim {config.rotary_dim}; rotary "
            "embeddings need an even rotary_dim >= 2")
