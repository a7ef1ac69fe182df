"""Parity with the official Moonshine Keras model (useful-moonshine 20241016).

The official model is Keras 3 and this process is Keras 2, so a subprocess
with TF_USE_LEGACY_KERAS=0 (this file run as a script) builds it with random
weights, randomises its norms and biases too, and dumps weights and outputs
for fixed audio to .npz. The test copies the weights into our 'waveform'
Moonshine with the paper's 32,768 vocabulary and compares the stem, encoder
and decoder outputs, batching both utterances together (so padding masks are
exercised as well: the official model runs one utterance, unpadded).

Needs `pip install --no-deps useful-moonshine==20241016 einops`; its package
__init__ imports the transcription helpers, so moonshine/model.py is loaded
by file path.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("tiny", "base")
AUDIO_SAMPLES = (16_000, 37_000)  # 1 s and 2.3 s
NUM_TOKENS = 11
OFFICIAL_VOCAB = 32_768
TOLERANCE = 1e-4
SEED = 1234


def _official_model_py():
    spec = importlib.util.find_spec("moonshine")  # finds; does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model.py")
    return path if os.path.exists(path) else None


# --- Subprocess side (Keras 3) ----------------------------------------------

def _dump_official(out_dir: str) -> None:
    import keras  # Keras 3: TF_USE_LEGACY_KERAS=0 in this process

    sys.path.insert(0, REPO_ROOT)
    from models import config

    spec = importlib.util.spec_from_file_location(
        "official_moonshine_model", _official_model_py())
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    rng = np.random.default_rng(SEED)
    audio = [0.3 * rng.standard_normal(n).astype(np.float32)
             for n in AUDIO_SAMPLES]
    tokens = np.concatenate([[config.SOS_ID], rng.integers(
        3, OFFICIAL_VOCAB, NUM_TOKENS - 1)]).astype(np.int32)[None]

    for preset in PRESETS:
        c = config.get_preset(preset).model
        keras.utils.set_random_seed(SEED)
        model = official.Moonshine(
            c.dim, c.n_heads * c.head_dim, c.n_heads, c.enc_layers,
            c.dec_layers, enc_ff_mult=c.ffn_dim // c.dim,
            dec_ff_mult=c.ffn_dim // c.dim, vocab_size=OFFICIAL_VOCAB)
        weights = _official_weights(keras, model, rng)
        out = {f"w/{k}": v for k, v in weights.items()}
        out["tokens"] = tokens
        out["trainable_params"] = np.int64(sum(
            int(np.prod(w.shape)) for m in (model.preprocessor.preprocess,
                                            model.encoder.encoder,
                                            model.decoder.uncached_call)
            for w in m.trainable_weights))
        for j, a in enumerate(audio):
            tensor = keras.ops.convert_to_tensor
            features = model.preprocessor(tensor(a[None, :, None]))
            frames = int(features.shape[1])
            encoded = model.encoder(features, tensor([frames]))
            logits = model.decoder.uncached_call(
                [tensor(tokens), encoded, tensor([NUM_TOKENS])])[0]
            out[f"audio{j}"] = a
            out[f"stem{j}"] = keras.ops.convert_to_numpy(features)[0]
            out[f"encoded{j}"] = keras.ops.convert_to_numpy(encoded)[0]
            out[f"logits{j}"] = keras.ops.convert_to_numpy(logits)[0]
        np.savez(os.path.join(out_dir, f"{preset}.npz"), **out)


def _official_weights(keras, model, rng):
    """Randomises every weight (norm scales and biases too) and returns them
    under neutral names; q/k/v kernels stay [dim, H, D], o is [H, D, dim]."""
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

    enc = [l for l in flat(model.encoder.encoder)
           if l.trainable_weights]
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


# --- Test side (Keras 2) ----------------------------------------------------

@pytest.fixture(scope="module")
def official_dumps(tmp_path_factory):
    if _official_model_py() is None:
        pytest.skip("pip install --no-deps useful-moonshine==20241016 einops")
    out_dir = str(tmp_path_factory.mktemp("official_moonshine"))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0", KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), out_dir],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return {p: dict(np.load(os.path.join(out_dir, f"{p}.npz")))
            for p in PRESETS}


def _load_into(model, w):
    """Copies the official weights into our Moonshine."""
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


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_parity_with_official_keras_model(preset, official_dumps):
    import dataclasses

    import tensorflow as tf

    from models import config
    from models import moonshine

    dump = official_dumps[preset]
    cfg = dataclasses.replace(config.get_preset(preset).model,
                              frontend="waveform", vocab_size=OFFICIAL_VOCAB,
                              dropout=0.0)
    model = moonshine.Moonshine(cfg)
    assert model.count_params() == int(dump["trainable_params"])
    weights = {k[2:]: v for k, v in dump.items() if k.startswith("w/")}
    _load_into(model, weights)

    audio = [dump[f"audio{j}"] for j in range(len(AUDIO_SAMPLES))]
    lengths = tf.constant([len(a) for a in audio])
    batch = tf.constant(np.stack([np.pad(a, (0, max(AUDIO_SAMPLES) - len(a)))
                                  for a in audio]))
    stem, _ = model.encoder.frontend(batch, lengths)
    encoded, encoded_lengths = model.encode(batch, lengths)
    tokens = np.repeat(dump["tokens"], len(audio), axis=0)
    logits = model.decode(tokens, encoded, encoded_lengths).numpy()
    for j in range(len(audio)):
        frames = dump[f"encoded{j}"].shape[0]
        assert int(encoded_lengths[j]) == frames
        for name, ours in (("stem", stem[j, :frames]),
                           ("encoded", encoded[j, :frames]),
                           ("logits", logits[j])):
            err = np.abs(np.asarray(ours) - dump[f"{name}{j}"]).max()
            assert err < TOLERANCE, (preset, AUDIO_SAMPLES[j], name, err)


if __name__ == "__main__":
    _dump_official(sys.argv[1])
