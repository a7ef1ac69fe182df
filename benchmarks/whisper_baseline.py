"""A Whisper-tiny-sized encoder-decoder in plain TensorFlow (random weights).

The latency baseline of `bench_latency.py`: Whisper tiny's published shape
(Radford et al. 2022, table 1): 80-bin log-mel of audio padded to 30 s
(3000 frames) -> Conv1D(384, 3) -> GELU -> Conv1D(384, 3, stride 2) -> GELU
-> + sinusoidal positions (1500 frames) -> 4 pre-LN encoder blocks (384 dims,
6 heads, MLP 1536, GELU) -> LN; a decoder of 4 pre-LN blocks (causal
self-attention, cross-attention, MLP) over a 51,865-token embedding with
learned positions, output tied to the embedding. Biases as Whisper's (none on
the key projections). Greedy decoding runs in one tf.while_loop with a
self-attention key/value cache and cross-attention keys/values computed once,
like `models/decoding.py`, so both models pay the same per-token machinery.

Only the shapes matter for timing: weights are random and the log-mel is the
project's own (`models.features`, n_fft 512 instead of Whisper's 400).
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
import tensorflow as tf

from models import config
from models import features

DIM = 384
HEADS = 6
HEAD_DIM = DIM // HEADS
ENC_LAYERS = 4
DEC_LAYERS = 4
MLP_DIM = 4 * DIM
VOCAB = 51_865
WINDOW_SECONDS = 30
MEL_FRAMES = WINDOW_SECONDS * config.SAMPLE_RATE // config.HOP_SAMPLES  # 3000
AUDIO_FRAMES = MEL_FRAMES // 2  # 1500
TEXT_CONTEXT = 448  # Whisper's learned positions; grown if asked for more


def encoder_flops(n_mels: int = config.N_MELS) -> float:
    """Multiply-add FLOPs (2 per MAC) of one 30 s window through the encoder."""
    t, d = AUDIO_FRAMES, DIM
    stem = 2 * MEL_FRAMES * 3 * n_mels * d + 2 * t * 3 * d * d
    per_layer = 2 * t * (4 * d * d + 2 * d * MLP_DIM) + 2 * 2 * t * t * d
    return float(stem + ENC_LAYERS * per_layer)


def _sinusoids(length: int, channels: int) -> np.ndarray:
    increment = math.log(10_000) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _gelu(x):
    return tf.nn.gelu(x, approximate=False)


class WhisperTinyLike(tf.Module):
    """Random-weight Whisper tiny at batch 1: `encode(audio)`,
    `encode_log_mel(mel)` and `greedy(audio, num_tokens)`."""

    def __init__(self, max_tokens: int = TEXT_CONTEXT, seed: int = 0):
        super().__init__(name="whisper_tiny_like")
        self._rng = np.random.default_rng(seed)
        self._w: Dict[str, tf.Variable] = {}
        self.conv1 = self._var("conv1", [3, config.N_MELS, DIM])
        self.conv1_b = self._var("conv1_b", [DIM], zero=True)
        self.conv2 = self._var("conv2", [3, DIM, DIM])
        self.conv2_b = self._var("conv2_b", [DIM], zero=True)
        self.positions = tf.constant(_sinusoids(AUDIO_FRAMES, DIM))
        self.enc = [self._block(f"enc{i}", cross=False) for i in range(ENC_LAYERS)]
        self.enc_ln = self._ln("enc_ln")
        self.embedding = self._var("embedding", [VOCAB, DIM])
        self.text_positions = self._var(
            "text_positions", [max(TEXT_CONTEXT, max_tokens + 1), DIM])
        self.dec = [self._block(f"dec{i}", cross=True) for i in range(DEC_LAYERS)]
        self.dec_ln = self._ln("dec_ln")

    # --- parameters --------------------------------------------------------
    def _var(self, name, shape, zero=False):
        value = (np.zeros(shape) if zero
                 else 0.02 * self._rng.standard_normal(shape)).astype(np.float32)
        return tf.Variable(value, name=name)

    def _ln(self, name):
        return (tf.Variable(np.ones([DIM], np.float32), name=name + "_g"),
                self._var(name + "_b", [DIM], zero=True))

    def _attn(self, name):
        return {"q": self._var(name + "_q", [DIM, DIM]),
                "q_b": self._var(name + "_qb", [DIM], zero=True),
                "k": self._var(name + "_k", [DIM, DIM]),  # no bias, as Whisper
                "v": self._var(name + "_v", [DIM, DIM]),
                "v_b": self._var(name + "_vb", [DIM], zero=True),
                "o": self._var(name + "_o", [DIM, DIM]),
                "o_b": self._var(name + "_ob", [DIM], zero=True)}

    def _block(self, name, cross: bool):
        block = {"ln1": self._ln(name + "_ln1"), "attn": self._attn(name + "_attn"),
                 "ln3": self._ln(name + "_ln3"),
                 "up": self._var(name + "_up", [DIM, MLP_DIM]),
                 "up_b": self._var(name + "_upb", [MLP_DIM], zero=True),
                 "down": self._var(name + "_down", [MLP_DIM, DIM]),
                 "down_b": self._var(name + "_downb", [DIM], zero=True)}
        if cross:
            block["ln2"] = self._ln(name + "_ln2")
            block["cross"] = self._attn(name + "_cross")
        return block

    # --- layers (batch 1: x is [T, DIM]) -----------------------------------
    @staticmethod
    def _norm(x, ln):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + 1e-5) * ln[0] + ln[1]

    @staticmethod
    def _heads(x):  # [T, DIM] -> [H, T, D]
        return tf.transpose(tf.reshape(x, [-1, HEADS, HEAD_DIM]), [1, 0, 2])

    def _kv(self, a, x):
        return self._heads(x @ a["k"]), self._heads(x @ a["v"] + a["v_b"])

    def _attend(self, a, x, k, v):
        q = self._heads(x @ a["q"] + a["q_b"])
        scores = tf.matmul(q, k, transpose_b=True) * (HEAD_DIM ** -0.5)
        out = tf.transpose(tf.matmul(tf.nn.softmax(scores), v), [1, 0, 2])
        return tf.reshape(out, [-1, DIM]) @ a["o"] + a["o_b"]

    def _mlp(self, b, x):
        return _gelu(x @ b["up"] + b["up_b"]) @ b["down"] + b["down_b"]

    # --- model -------------------------------------------------------------
    def log_mel(self, audio):
        """audio [1, samples] -> [1, 3000, 80]: padded (or cut) to 30 s first."""
        window = WINDOW_SECONDS * config.SAMPLE_RATE
        audio = audio[:, :window]
        audio = tf.pad(audio, [[0, 0], [0, window - tf.shape(audio)[1]]])
        mel, _ = features.log_mel_spectrogram(audio, tf.constant([window], tf.int64))
        return tf.pad(mel, [[0, 0], [0, MEL_FRAMES - tf.shape(mel)[1]], [0, 0]])

    def encode(self, audio):
        """audio [1, samples] -> encoded [1500, DIM] (every input is 30 s)."""
        return self.encode_log_mel(self.log_mel(audio))

    def encode_log_mel(self, mel):
        """mel [1, 3000, 80] -> encoded [1500, DIM]."""
        x = _gelu(tf.nn.conv1d(mel, self.conv1, 1, "SAME")
                  + self.conv1_b)
        x = _gelu(tf.nn.conv1d(x, self.conv2, 2, "SAME") + self.conv2_b)[0]
        x = x + self.positions
        for b in self.enc:
            h = self._norm(x, b["ln1"])
            x = x + self._attend(b["attn"], h, *self._kv(b["attn"], h))
            x = x + self._mlp(b, self._norm(x, b["ln3"]))
        return self._norm(x, self.enc_ln)

    @tf.autograph.experimental.do_not_convert
    def greedy(self, audio, num_tokens):
        """Encodes, then decodes exactly num_tokens tokens (no early stop)."""
        encoded = self.encode(audio)
        cross = [self._kv(b["cross"], encoded) for b in self.dec]
        n = tf.cast(num_tokens, tf.int32)
        cache = [(tf.zeros([HEADS, n, HEAD_DIM]), tf.zeros([HEADS, n, HEAD_DIM]))
                 for _ in self.dec]

        def write(c, new, t):  # c [H, N, D], new [H, 1, D] at position t
            c = tf.transpose(c, [1, 0, 2])
            c = tf.tensor_scatter_nd_update(c, [[t]], tf.transpose(new, [1, 0, 2]))
            return tf.transpose(c, [1, 0, 2])

        def body(t, token, out, cache):
            x = (tf.gather(self.embedding, token[None])
                 + self.text_positions[t][None])  # [1, DIM]
            new_cache = []
            for b, (ck, cv), (xk, xv) in zip(self.dec, cache, cross):
                h = self._norm(x, b["ln1"])
                k, v = self._kv(b["attn"], h)
                ck, cv = write(ck, k, t), write(cv, v, t)
                x = x + self._attend(b["attn"], h, ck[:, :t + 1], cv[:, :t + 1])
                x = x + self._attend(b["cross"], self._norm(x, b["ln2"]), xk, xv)
                x = x + self._mlp(b, self._norm(x, b["ln3"]))
                new_cache.append((ck, cv))
            logits = tf.matmul(self._norm(x, self.dec_ln), self.embedding,
                               transpose_b=True)[0]
            token = tf.argmax(logits, output_type=tf.int32)
            out = tf.tensor_scatter_nd_update(out, [[t]], [token])
            return t + 1, token, out, new_cache

        _, _, out, _ = tf.while_loop(
            lambda t, *_: t < n, body,
            (tf.constant(0), tf.constant(config.SOS_ID), tf.zeros([n], tf.int32),
             cache))
        return out
