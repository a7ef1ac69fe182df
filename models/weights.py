"""Official Moonshine checkpoints into our model, and initial weights for the Trainer.

Two published layouts are read:
- the Keras files useful-moonshine loads (`preprocessor.weights.h5`,
  `encoder.weights.h5`, `decoder.weights.h5`, Keras 3 `save_weights` of its
  three functional models), read here with h5py, no Keras 3 needed;
- the Hugging Face layout of transformers' Moonshine (`model.safetensors`,
  optionally beside its `config.json`).

Both are turned into one dict in Hugging Face's parameter names and PyTorch
layout ([out, in] linear weights, [out, in, kernel] convolutions), which maps
onto our variables by the table in `_hf_map`. `moonshine-tfx import-weights`
writes that dict (the part the target preset can use) as `model.safetensors`
plus `moonshine_import.json`; `load_initial_weights(model, path)` reads it, or
an official checkpoint directly, before the Trainer fine-tunes.

What transfers: every tensor, when the target has the official architecture
(front end 'waveform', vocabulary 'moonshine_bpe', same sizes). A model of
the character vocabulary takes everything except the token embedding (which
is also the output layer: the official model ties them), since its ids mean
other tokens; a 'log_mel' model also keeps its own conv stem, since the
waveform stem's weights have no counterpart there. Those stay at their
initialisation and are listed in the import report.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from models import config as cfg

HF_WEIGHTS_FILE = "model.safetensors"
HF_CONFIG_FILE = "config.json"
KERAS_WEIGHTS_FILES = ("preprocessor.weights.h5", "encoder.weights.h5",
                       "decoder.weights.h5")
IMPORT_REPORT_FILE = "moonshine_import.json"
EMBEDDING = "model.decoder.embed_tokens.weight"
PROJ_OUT = "proj_out.weight"  # transformers' output layer, tied to EMBEDDING

Tensors = Dict[str, np.ndarray]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def _same(a):
    return a


def _linear(a):  # [out, in] <-> [in, out]
    return a.T


def _conv(a):  # torch [out, in, kernel] <-> Keras [kernel, in, out]
    return a.transpose(2, 1, 0)


# --- Reading checkpoints ------------------------------------------------------

@dataclasses.dataclass
class Checkpoint:
    tensors: Tensors  # Hugging Face names and layout
    source: str
    layout: str  # 'keras_h5' or 'safetensors'
    n_heads: Optional[Tuple[int, int]] = None  # (encoder, decoder) if known
    # (rotated dims per head, base) from a Hugging Face config.json, if known
    rotary: Optional[Tuple[int, float]] = None


def _read_bytes(path: str) -> bytes:
    import tensorflow as tf  # gfile: local paths, gs://, s3://
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _exists(path: str) -> bool:
    import tensorflow as tf
    return tf.io.gfile.exists(path)


def _h5_datasets(path: str) -> Dict[str, np.ndarray]:
    import h5py
    out = {}
    try:
        with h5py.File(io.BytesIO(_read_bytes(path)), "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                         if isinstance(obj, h5py.Dataset) else None)
    except OSError as e:
        raise CheckpointError(f"{path}: not a readable HDF5 weights file "
                              f"({e})") from None
    return out


# Keras 3 names the layers of a container by class, deduplicated in order:
# layer i of the encoder or decoder is `functional` (i = 0) or `functional_i`.
_KERAS_LAYER = re.compile(r"^layers/functional(?:_(\d+))?/layers/(.+)/vars/(\d)$")
_KERAS_TOP = re.compile(r"^layers/([a-z_0-9]+)/vars/(\d)$")
_KERAS_STEM = re.compile(r"^layers/sequential/layers/([a-z_0-9]+)/vars/(\d)$")
_STEM_NAMES = {"conv1d": "conv1", "conv1d_1": "conv2", "conv1d_2": "conv3",
               "group_normalization": "groupnorm"}
_LAYER_NORMS = ("input_layernorm", "post_attention_layernorm",
                "final_layernorm")  # HF's norm1, norm2, norm3 of a layer
_NORM_NAMES = dict(zip(("layer_normalization", "layer_normalization_1",
                        "layer_normalization_2"), _LAYER_NORMS))
_ATTN_NAMES = {"mha_with_rope": "self_attn", "mha_causal_with_rope": "self_attn",
               "mha_precomputed_kv": "encoder_attn"}
_PROJ_NAMES = {"query_dense": "q_proj", "key_dense": "k_proj",
               "value_dense": "v_proj", "output_dense": "o_proj"}
# The FFN's two Dense layers: in a Sequential (encoder) or not (decoder).
_FFN = re.compile(r"^functional/layers/(?:sequential/layers/)?(dense(?:_1)?)$")


def _keras_layer_tensor(part: str, var: str, value: np.ndarray,
                        heads: set) -> Tuple[str, np.ndarray]:
    """(name inside an HF layer, HF-layout value) for a Keras layer path."""
    suffix = "weight" if var == "0" else "bias"
    if part in _NORM_NAMES:
        return f"{_NORM_NAMES[part]}.{suffix}", value
    attn, _, proj = part.partition("/")
    if attn in _ATTN_NAMES and proj in _PROJ_NAMES:
        if proj == "output_dense":  # [H, D, dim]
            heads.add(value.shape[0])
            value = value.reshape(-1, value.shape[-1])
        else:  # [dim, H, D]
            heads.add(value.shape[1])
            value = value.reshape(value.shape[0], -1)
        return f"{_ATTN_NAMES[attn]}.{_PROJ_NAMES[proj]}.{suffix}", value.T
    m = _FFN.match(part)
    if m:
        fc = "fc1" if m.group(1) == "dense" else "fc2"
        return f"mlp.{fc}.{suffix}", value.T if var == "0" else value
    raise KeyError(part)


def read_keras_h5(directory: str) -> Checkpoint:
    """The three official `.weights.h5` files -> HF names and layout."""
    paths = [os.path.join(directory, name) for name in KERAS_WEIGHTS_FILES]
    tensors: Tensors = {}
    heads = {"encoder": set(), "decoder": set()}
    for path, part in zip(paths, ("preprocessor", "encoder", "decoder")):
        for name, value in sorted(_h5_datasets(path).items()):
            value = np.asarray(value, np.float32)
            try:
                if part == "preprocessor":
                    m = _KERAS_STEM.match(name)
                    layer = _STEM_NAMES[m.group(1)]
                    suffix = "weight" if m.group(2) == "0" else "bias"
                    if value.ndim == 3:
                        value = _conv(value)
                    tensors[f"model.encoder.{layer}.{suffix}"] = value
                    continue
                m = _KERAS_LAYER.match(name)
                if m:
                    inner, value = _keras_layer_tensor(
                        m.group(2), m.group(3), value, heads[part])
                    tensors[f"model.{part}.layers.{int(m.group(1) or 0)}."
                            f"{inner}"] = value
                    continue
                layer = _KERAS_TOP.match(name).group(1)
                if layer == "rotary_embedding":
                    continue  # inv_freq: derived from the config, not learnt
                if layer == "layer_normalization":
                    final = "layer_norm" if part == "encoder" else "norm"
                    tensors[f"model.{part}.{final}.weight"] = value
                elif layer == "reversible_embedding" and part == "decoder":
                    tensors[EMBEDDING] = value
                else:
                    raise KeyError(name)
            except (KeyError, AttributeError):
                raise CheckpointError(
                    f"{path}: unexpected weight {name!r} {value.shape}; not "
                    "a useful-moonshine checkpoint") from None
    n_heads = None
    if all(len(h) == 1 for h in heads.values()):
        n_heads = (heads["encoder"].pop(), heads["decoder"].pop())
    return Checkpoint(tensors, directory, "keras_h5", n_heads)


def read_safetensors(path: str) -> Checkpoint:
    """A Hugging Face `model.safetensors` (file or its directory)."""
    from safetensors.numpy import load as load_safetensors

    directory = os.path.dirname(path)
    try:
        tensors = dict(load_safetensors(_read_bytes(path)))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"({e})") from None
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    n_heads = rotary = None
    config_path = os.path.join(directory, HF_CONFIG_FILE)
    if _exists(config_path):
        hf = json.loads(_read_bytes(config_path))
        if "encoder_num_attention_heads" in hf:
            n_heads = (int(hf["encoder_num_attention_heads"]),
                       int(hf["decoder_num_attention_heads"]))
        if n_heads and "hidden_size" in hf and "partial_rotary_factor" in hf:
            # transformers rotates int(head_dim * factor) dims of each head.
            head_dim = int(hf["hidden_size"]) // n_heads[0]
            rotary = (int(head_dim * float(hf["partial_rotary_factor"])),
                      float(hf.get("rope_theta", 10_000.0)))
    return Checkpoint(tensors, path, "safetensors", n_heads, rotary)


def read_checkpoint(path: str) -> Checkpoint:
    """A `model.safetensors` file, or a directory holding one, or holding
    the three official `.weights.h5` files."""
    if path.endswith(".safetensors"):
        if not _exists(path):
            raise CheckpointError(f"{path}: no such file")
        return read_safetensors(path)
    if _exists(os.path.join(path, HF_WEIGHTS_FILE)):
        return read_safetensors(os.path.join(path, HF_WEIGHTS_FILE))
    if all(_exists(os.path.join(path, n)) for n in KERAS_WEIGHTS_FILES):
        return read_keras_h5(path)
    raise CheckpointError(
        f"{path}: neither a .safetensors file nor a directory holding "
        f"{HF_WEIGHTS_FILE} or {', '.join(KERAS_WEIGHTS_FILES)}")


def write_safetensors(tensors: Tensors, path: str,
                      metadata: Optional[Dict[str, str]] = None) -> None:
    from safetensors.numpy import save as save_safetensors
    import tensorflow as tf

    data = save_safetensors({k: np.ascontiguousarray(v, np.float32)
                             for k, v in sorted(tensors.items())},
                            metadata=metadata)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


# --- Our variables in Hugging Face names ------------------------------------

def _hf_map(model) -> Dict[str, Tuple[object, Callable]]:
    """HF name -> (our variable, layout change; each is its own inverse)."""
    m: Dict[str, Tuple[object, Callable]] = {}

    def attention(prefix, layer):
        for proj, dense in (("q", layer.q_proj), ("k", layer.k_proj),
                            ("v", layer.v_proj), ("o", layer.o_proj)):
            m[f"{prefix}.{proj}_proj.weight"] = (dense.kernel, _linear)

    def dense(prefix, layer, layout=_linear):
        m[f"{prefix}.weight"] = (layer.kernel, layout)
        m[f"{prefix}.bias"] = (layer.bias, _same)

    def norm(name, layer):
        m[name] = (layer.gamma, _same)

    encoder, decoder = model.encoder, model.decoder
    if model.model_config.frontend == cfg.WAVEFORM_FRONTEND:
        stem = encoder.frontend
        m["model.encoder.conv1.weight"] = (stem.conv1.kernel, _conv)
        m["model.encoder.groupnorm.weight"] = (stem.norm.gamma, _same)
        m["model.encoder.groupnorm.bias"] = (stem.norm.beta, _same)
        dense("model.encoder.conv2", stem.conv2, _conv)
        dense("model.encoder.conv3", stem.conv3, _conv)
    def layer(prefix, norms, attentions, ffn):
        for name, layer_norm in zip(_LAYER_NORMS, norms):
            norm(f"{prefix}.{name}.weight", layer_norm)
        for name, layer_attention in attentions:
            attention(f"{prefix}.{name}", layer_attention)
        dense(f"{prefix}.mlp.fc1", ffn.up)
        dense(f"{prefix}.mlp.fc2", ffn.down)

    for i, b in enumerate(encoder.blocks):
        layer(f"model.encoder.layers.{i}", (b.norm1, b.norm2),
              [("self_attn", b.attention)], b.ffn)
    norm("model.encoder.layer_norm.weight", encoder.norm)
    m[EMBEDDING] = (decoder.embedding.embeddings, _same)
    for i, b in enumerate(decoder.blocks):
        layer(f"model.decoder.layers.{i}", (b.norm1, b.norm2, b.norm3),
              [("self_attn", b.self_attention),
               ("encoder_attn", b.cross_attention)], b.ffn)
    norm("model.decoder.norm.weight", decoder.norm)
    return m


def to_hf(model) -> Tensors:
    """Our model's weights in Hugging Face names and layout."""
    if model.model_config.absolute_positions:
        raise CheckpointError(
            "a model with absolute encoder positions "
            "(ModelConfig.absolute_positions) has no Moonshine checkpoint "
            "form: Moonshine's encoder has rotary positions only")
    return {name: layout(var.numpy())
            for name, (var, layout) in _hf_map(model).items()}


# --- Importing ------------------------------------------------------------------

@dataclasses.dataclass
class ImportReport:
    source: str
    layout: str
    imported: List[str]  # HF names assigned
    skipped: Dict[str, str]  # HF name in the checkpoint -> why not used
    initialised: List[str]  # our variables left at their initialisation

    def to_json(self) -> Dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [f"imported {len(self.imported)} tensors from {self.source} "
                 f"({self.layout})"]
        reasons: Dict[str, List[str]] = {}
        for name, why in self.skipped.items():
            reasons.setdefault(why, []).append(name)
        for why, names in reasons.items():
            lines.append(f"skipped {len(names)} ({why}): "
                         f"{', '.join(sorted(names)[:4])}"
                         f"{' ...' if len(names) > 4 else ''}")
        if self.initialised:
            lines.append(f"kept at initialisation: "
                         f"{', '.join(self.initialised)}")
        return "\n".join(lines)


def _is_stem(name: str) -> bool:
    return re.match(r"model\.encoder\.(conv\d|groupnorm)\.", name) is not None


def plan_import(model, checkpoint: Checkpoint
                ) -> Tuple[Dict[str, np.ndarray], ImportReport]:
    """Which checkpoint tensors go where (HF name -> value in our layout).

    Raises CheckpointError when the checkpoint is a different size of
    model (dims, layers, heads) or lacks a tensor the model needs; skips,
    and reports, the embedding for a model of another vocabulary than the
    official BPE and the waveform stem for a 'log_mel' model.
    """
    config = model.model_config
    if config.absolute_positions:
        # Moonshine checkpoints (official, Hugging Face) were trained with
        # rotary positions only: under added sinusoids every layer would see
        # inputs it never learnt.
        raise CheckpointError(
            f"{checkpoint.source}: a Moonshine checkpoint has no absolute "
            "encoder positions, and this model adds them "
            "(ModelConfig.absolute_positions): fine-tune a preset without "
            "them (tiny, base)")
    if checkpoint.n_heads and checkpoint.n_heads != (config.n_heads,) * 2:
        raise CheckpointError(
            f"{checkpoint.source}: {checkpoint.n_heads[0]} encoder / "
            f"{checkpoint.n_heads[1]} decoder attention heads; the model has "
            f"{config.n_heads}")
    if checkpoint.rotary and checkpoint.rotary != (config.rotary_dim,
                                                   config.rope_base):
        raise CheckpointError(
            f"{checkpoint.source}: rotary embeddings on {checkpoint.rotary[0]} "
            f"dims of each head with base {checkpoint.rotary[1]:g}; the model "
            f"rotates {config.rotary_dim} with base {config.rope_base:g}")
    targets = _hf_map(model)
    tensors = dict(checkpoint.tensors)
    skipped: Dict[str, str] = {}
    proj_out = tensors.pop(PROJ_OUT, None)
    if proj_out is not None:
        if EMBEDDING in tensors and not np.array_equal(proj_out,
                                                       tensors[EMBEDDING]):
            raise CheckpointError(
                f"{checkpoint.source}: {PROJ_OUT} differs from {EMBEDDING}; "
                "our model ties the output layer to the embedding")
        skipped[PROJ_OUT] = "tied to the embedding"
    assign: Dict[str, np.ndarray] = {}
    for name, value in sorted(tensors.items()):
        if name not in targets:
            if _is_stem(name):
                skipped[name] = (f"the model's front end is "
                                 f"{config.frontend!r}, not "
                                 f"{cfg.WAVEFORM_FRONTEND!r}")
                continue
            raise CheckpointError(
                f"{checkpoint.source}: {name} {value.shape} has no "
                f"counterpart in the model (enc_layers {config.enc_layers}, "
                f"dec_layers {config.dec_layers}, front end "
                f"{config.frontend!r})")
        var, layout = targets[name]
        expected = layout(np.empty(var.shape, np.float32)).shape
        if name == EMBEDDING and value.shape[1:] == expected[1:]:
            # The rows are token ids: the official BPE's (that many rows)
            # transfer only into that vocabulary, never into another's of
            # the same count.
            if (value.shape[0] == cfg.MOONSHINE_BPE_VOCAB_SIZE
                    and config.vocabulary != cfg.MOONSHINE_BPE_VOCABULARY):
                skipped[name] = (
                    f"vocabulary of {value.shape[0]} tokens (the official "
                    f"BPE); the model's is {config.vocabulary!r}: train with "
                    f"vocabulary {cfg.MOONSHINE_BPE_VOCABULARY!r} to import "
                    "it")
                continue
            if value.shape != expected:
                skipped[name] = (f"vocabulary of {value.shape[0]} tokens; "
                                 f"the model has {expected[0]}")
                continue
        if value.shape != expected:
            raise CheckpointError(
                f"{checkpoint.source}: {name} has shape {value.shape}; the "
                f"model (dim {config.dim}, ffn_dim {config.ffn_dim}) needs "
                f"{expected}")
        assign[name] = layout(value)
    missing = [n for n in targets if n not in assign and n != EMBEDDING
               and n not in skipped]
    if missing:
        raise CheckpointError(
            f"{checkpoint.source}: missing {len(missing)} tensors the model "
            f"needs, e.g. {', '.join(missing[:3])}")
    used = {id(targets[n][0]) for n in assign}
    # No Moonshine checkpoint has a CTC head (ours, trained with
    # ctc_weight > 0): it always starts at its initialisation.
    ours = {id(v) for v in (model.ctc_head.weights if model.ctc_head
                            else [])}
    initialised = [v.name for v in model.weights
                   if id(v) not in used and id(v) not in ours]
    return assign, ImportReport(checkpoint.source, checkpoint.layout,
                                sorted(assign), skipped, initialised)


def _assign(model, values: Dict[str, np.ndarray]) -> None:
    targets = _hf_map(model)
    for name, value in values.items():
        targets[name][0].assign(value)


def load_initial_weights(model, path: Optional[str]) -> Optional[ImportReport]:
    """Initialises `model` (a Moonshine) from an import-weights output or an
    official checkpoint; no-op for an empty path. Call after the model is
    built and before training (a BackupAndRestore resume then overrides it)."""
    if not path:
        return None
    values, report = plan_import(model, read_checkpoint(path))
    _assign(model, values)
    import logging
    logging.info("initial weights: %s", report.summary())
    return report


def import_weights(source: str, model_config, out_dir: str) -> ImportReport:
    """Converts an official checkpoint for `model_config` into out_dir:
    `model.safetensors` (what the model can use, HF names) and a report."""
    import tensorflow as tf
    from models import moonshine

    model = moonshine.Moonshine(model_config)
    checkpoint = read_checkpoint(source)
    values, report = plan_import(model, checkpoint)
    _assign(model, values)  # proves the values fit before anything is written
    tf.io.gfile.makedirs(out_dir)
    write_safetensors({k: checkpoint.tensors[k] for k in values},
                      os.path.join(out_dir, HF_WEIGHTS_FILE),
                      metadata={"format": "pt", "source": source})
    with tf.io.gfile.GFile(os.path.join(out_dir, IMPORT_REPORT_FILE), "w") as f:
        json.dump(dict(report.to_json(),
                       model_config=dataclasses.asdict(model_config)), f,
                  indent=2)
    return report
