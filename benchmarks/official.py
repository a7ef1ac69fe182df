"""The official Moonshine Keras model (useful-moonshine 20241016) beside ours.

Shared by the parity test and the decoding benchmark: locate and load the
official `moonshine/model.py`, build it at one of our presets' sizes,
randomise every weight (norm scales and biases too) and export them under
neutral names, and copy those weights into our `models.moonshine.Moonshine`.

The official model is Keras 3; this project runs Keras 2 (tf_keras), so the
official side runs in a subprocess started with `subprocess_env()` and hands
its weights over as arrays. Neither side's Keras is imported here at module
level: the functions that need it take the `keras` module as an argument.

Needs `pip install --no-deps useful-moonshine==20241016 einops`; its package
__init__ imports the transcription helpers (and their dependencies), so
moonshine/model.py is loaded by file path.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, Optional

import numpy as np

from models import config

OFFICIAL_VOCAB = config.MOONSHINE_BPE_VOCAB_SIZE  # the official default
INSTALL_HINT = "pip install --no-deps useful-moonshine==20241016 einops"


def official_model_py() -> Optional[str]:
    """Path of the official moonshine/model.py, or None if not installed."""
    spec = importlib.util.find_spec("moonshine")  # finds; does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model.py")
    return path if os.path.exists(path) else None


def subprocess_env() -> Dict[str, str]:
    """Environment of a child process that runs the official (Keras 3) model."""
    return dict(os.environ, TF_USE_LEGACY_KERAS="0", KERAS_BACKEND="tensorflow",
                TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def load_official_module():
    """Imports the official moonshine/model.py (Keras 3 must be active)."""
    path = official_model_py()
    if path is None:
        raise ImportError(f"useful-moonshine is not installed: {INSTALL_HINT}")
    spec = importlib.util.spec_from_file_location("official_moonshine_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_official(official, model_config, vocab_size: int = OFFICIAL_VOCAB):
    """official.Moonshine at the sizes of one of our ModelConfigs."""
    c = model_config
    return official.Moonshine(
        c.dim, c.n_heads * c.head_dim, c.n_heads, c.enc_layers, c.dec_layers,
        enc_ff_mult=c.ffn_dim // c.dim, dec_ff_mult=c.ffn_dim // c.dim,
        vocab_size=vocab_size)


def official_trainable_params(model) -> int:
    return sum(int(np.prod(w.shape)) for m in (model.preprocessor.preprocess,
                                               model.encoder.encoder,
                                               model.decoder.uncached_call)
               for w in m.trainable_weights)


def randomise_official_weights(keras, model, rng) -> Dict[str, np.ndarray]:
    """Randomises every weight of the official model (norm scales and biases
    too) and returns them under neutral names; q/k/v kernels stay
    [dim, H, D], o is [H, D, dim]."""
    L = keras.layers

    def randomise(layer):
        for w in layer.trainable_weights:
            v = keras.ops.convert_to_numpy(w)
            if w.name in ("gamma",):
                v = 1.0 + 0.2 * rng.standard_normal(v.shape)
            elif w.name in ("beta", "bias"):
                v = 0.1 * rng.standard_normal(v.shape)
            w.assign(v.astype(np.float32))

    def flat(layer):  # every leaf layer under `layer`, in graph order
        subs = getattr(layer, "layers", None)
        if not subs or isinstance(layer, L.MultiHeadAttention):
            return [layer]
        return [leaf for s in subs for leaf in flat(s)]

    out = {}

    def attention(prefix, mha):
        randomise(mha)
        for name, dense in (("q", mha._query_dense), ("k", mha._key_dense),
                            ("v", mha._value_dense), ("o", mha._output_dense)):
            out[f"{prefix}.{name}"] = keras.ops.convert_to_numpy(dense.kernel)

    def dense(prefix, layer):
        randomise(layer)
        out[f"{prefix}.kernel"] = keras.ops.convert_to_numpy(layer.kernel)
        out[f"{prefix}.bias"] = keras.ops.convert_to_numpy(layer.bias)

    def norm(name, layer):
        randomise(layer)
        out[name] = keras.ops.convert_to_numpy(layer.gamma)

    stem = [l for l in flat(model.preprocessor.preprocess) if l.weights]
    conv1, group_norm, conv2, conv3 = stem
    randomise(conv1)
    out["stem.conv1.kernel"] = keras.ops.convert_to_numpy(conv1.kernel)
    randomise(group_norm)
    out["stem.gn.gamma"] = keras.ops.convert_to_numpy(group_norm.gamma)
    out["stem.gn.beta"] = keras.ops.convert_to_numpy(group_norm.beta)
    dense("stem.conv2", conv2)
    dense("stem.conv3", conv3)

    enc = [l for l in flat(model.encoder.encoder) if l.trainable_weights]
    per_layer = 5  # norm1, attention, norm2, ffn up, ffn down
    for i in range(len(enc) // per_layer):
        n1, mha, n2, up, down = enc[i * per_layer:(i + 1) * per_layer]
        assert isinstance(mha, L.MultiHeadAttention), mha
        norm(f"enc.{i}.norm1", n1)
        attention(f"enc.{i}.attn", mha)
        norm(f"enc.{i}.norm2", n2)
        dense(f"enc.{i}.ffn.up", up)
        dense(f"enc.{i}.ffn.down", down)
    norm("enc.norm", enc[-1])

    dec = model.decoder
    randomise(dec.embedding_layer)
    out["dec.embedding"] = keras.ops.convert_to_numpy(
        dec.embedding_layer.embeddings)
    for i, layer in enumerate(dec.decoder_layers):
        norm(f"dec.{i}.norm1", layer.norm1)
        attention(f"dec.{i}.self", layer.self_attention)
        norm(f"dec.{i}.norm2", layer.norm2)
        attention(f"dec.{i}.cross", layer.cross_attention)
        norm(f"dec.{i}.norm3", layer.norm3)
        up, down = [l for l in flat(layer.ff.ff_swiglu) if l.weights]
        dense(f"dec.{i}.ffn.up", up)
        dense(f"dec.{i}.ffn.down", down)
    norm("dec.norm", dec.post_norm)
    return out


def load_into(model, w: Dict[str, np.ndarray]) -> None:
    """Copies weights from `randomise_official_weights` into our Moonshine
    (a 'waveform' front end with the official vocabulary size)."""
    def attention(ours, prefix):
        q = w[f"{prefix}.q"]
        dim = q.shape[0]
        ours.q_proj.kernel.assign(q.reshape(dim, -1))
        ours.k_proj.kernel.assign(w[f"{prefix}.k"].reshape(dim, -1))
        ours.v_proj.kernel.assign(w[f"{prefix}.v"].reshape(dim, -1))
        ours.o_proj.kernel.assign(w[f"{prefix}.o"].reshape(-1, dim))

    def dense(ours, prefix):
        ours.kernel.assign(w[f"{prefix}.kernel"])
        ours.bias.assign(w[f"{prefix}.bias"])

    def ffn(ours, prefix):
        dense(ours.up, f"{prefix}.up")
        dense(ours.down, f"{prefix}.down")

    stem = model.encoder.frontend
    stem.conv1.kernel.assign(w["stem.conv1.kernel"])
    stem.norm.gamma.assign(w["stem.gn.gamma"])
    stem.norm.beta.assign(w["stem.gn.beta"])
    dense(stem.conv2, "stem.conv2")
    dense(stem.conv3, "stem.conv3")
    for i, block in enumerate(model.encoder.blocks):
        block.norm1.gamma.assign(w[f"enc.{i}.norm1"])
        attention(block.attention, f"enc.{i}.attn")
        block.norm2.gamma.assign(w[f"enc.{i}.norm2"])
        ffn(block.ffn, f"enc.{i}.ffn")
    model.encoder.norm.gamma.assign(w["enc.norm"])
    model.decoder.embedding.embeddings.assign(w["dec.embedding"])
    for i, block in enumerate(model.decoder.blocks):
        block.norm1.gamma.assign(w[f"dec.{i}.norm1"])
        attention(block.self_attention, f"dec.{i}.self")
        block.norm2.gamma.assign(w[f"dec.{i}.norm2"])
        attention(block.cross_attention, f"dec.{i}.cross")
        block.norm3.gamma.assign(w[f"dec.{i}.norm3"])
        ffn(block.ffn, f"dec.{i}.ffn")
    model.decoder.norm.gamma.assign(w["dec.norm"])
