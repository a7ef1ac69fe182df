"""Importing official Moonshine checkpoints (models/weights.py, `import-weights`).

A Keras 3 subprocess (this file run as a script) builds the official model
(useful-moonshine) at the tiny preset's sizes with random weights and writes
it in both published layouts: the Keras `.weights.h5` files through the
official model's own save path (what its `load_model` reads back), and the
Hugging Face safetensors layout of transformers' Moonshine (names and
[out, in] layouts as transformers' convert_usefulsensors_to_hf writes them,
mapped here independently of models/weights.py). It also records the official
outputs for one utterance. The tests import each checkpoint into our model
and compare outputs within the parity tolerance.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run as a script (the Keras 3 subprocess)

from benchmarks import official  # noqa: E402

PRESET = "tiny"
AUDIO_SAMPLES = 23_000
NUM_TOKENS = 7
TOLERANCE = 1e-4
SEED = 99
LAYOUTS = ("keras_h5", "safetensors")


# --- Subprocess side (Keras 3) ----------------------------------------------

def _hf_state_dict(w):
    """transformers' MoonshineForConditionalGeneration state dict from the
    neutral names of official.randomise_official_weights."""
    out = {}

    def attention(hf, ours):
        dim = w[f"{ours}.q"].shape[0]
        for p in "qkv":
            out[f"{hf}.{p}_proj.weight"] = w[f"{ours}.{p}"].reshape(dim, -1).T
        out[f"{hf}.o_proj.weight"] = w[f"{ours}.o"].reshape(-1, dim).T

    def linear(hf, ours, conv=False):
        k = w[f"{ours}.kernel"]
        out[f"{hf}.weight"] = k.transpose(2, 1, 0) if conv else k.T
        out[f"{hf}.bias"] = w[f"{ours}.bias"]

    enc, dec = "model.encoder", "model.decoder"
    out[f"{enc}.conv1.weight"] = w["stem.conv1.kernel"].transpose(2, 1, 0)
    out[f"{enc}.groupnorm.weight"] = w["stem.gn.gamma"]
    out[f"{enc}.groupnorm.bias"] = w["stem.gn.beta"]
    linear(f"{enc}.conv2", "stem.conv2", conv=True)
    linear(f"{enc}.conv3", "stem.conv3", conv=True)
    def layers(hf, ours, attentions):
        norms = ("input_layernorm", "post_attention_layernorm",
                 "final_layernorm")
        i = 0
        while f"{ours}.{i}.norm1" in w:
            p = f"{hf}.layers.{i}"
            for j, name in enumerate(norms):
                if f"{ours}.{i}.norm{j + 1}" in w:
                    out[f"{p}.{name}.weight"] = w[f"{ours}.{i}.norm{j + 1}"]
            for name, neutral in attentions:
                attention(f"{p}.{name}", f"{ours}.{i}.{neutral}")
            linear(f"{p}.mlp.fc1", f"{ours}.{i}.ffn.up")
            linear(f"{p}.mlp.fc2", f"{ours}.{i}.ffn.down")
            i += 1

    layers(enc, "enc", [("self_attn", "attn")])
    out[f"{enc}.layer_norm.weight"] = w["enc.norm"]
    out[f"{dec}.embed_tokens.weight"] = w["dec.embedding"]
    # transformers' save_pretrained drops this tied copy; keeping it here
    # exercises the check that it equals the embedding.
    out["proj_out.weight"] = w["dec.embedding"]
    layers(dec, "dec", [("self_attn", "self"), ("encoder_attn", "cross")])
    out[f"{dec}.norm.weight"] = w["dec.norm"]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _write_official(out_dir: str) -> None:
    import keras  # Keras 3: TF_USE_LEGACY_KERAS=0 in this process
    from safetensors.numpy import save_file

    from models import config

    c = config.get_preset(PRESET).model
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = official.build_official(official.load_official_module(), c)
    w = official.randomise_official_weights(keras, model, rng)

    keras_dir = os.path.join(out_dir, "keras_h5")
    os.makedirs(keras_dir)
    for part, m in (("preprocessor", model.preprocessor.preprocess),
                    ("encoder", model.encoder.encoder),
                    ("decoder", model.decoder.uncached_call)):
        m.save_weights(os.path.join(keras_dir, f"{part}.weights.h5"))
    hf_dir = os.path.join(out_dir, "safetensors")
    os.makedirs(hf_dir)
    save_file(_hf_state_dict(w), os.path.join(hf_dir, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        # The fields transformers' MoonshineConfig uses for these shapes;
        # 0.9 is its default partial_rotary_factor (36-dim heads -> 32).
        json.dump({"model_type": "moonshine", "hidden_size": c.dim,
                   "encoder_num_attention_heads": c.n_heads,
                   "decoder_num_attention_heads": c.n_heads,
                   "partial_rotary_factor": 0.9, "rope_theta": 10000.0}, f)

    audio = 0.3 * rng.standard_normal(AUDIO_SAMPLES).astype(np.float32)
    tokens = np.concatenate([[config.SOS_ID], rng.integers(
        3, official.OFFICIAL_VOCAB, NUM_TOKENS - 1)]).astype(np.int32)[None]
    tensor = keras.ops.convert_to_tensor
    features = model.preprocessor(tensor(audio[None, :, None]))
    encoded = model.encoder(features, tensor([int(features.shape[1])]))
    logits = model.decoder.uncached_call(
        [tensor(tokens), encoded, tensor([NUM_TOKENS])])[0]
    np.savez(os.path.join(out_dir, "outputs.npz"), audio=audio, tokens=tokens,
             encoded=keras.ops.convert_to_numpy(encoded)[0],
             logits=keras.ops.convert_to_numpy(logits)[0],
             **{f"w/{k}": v for k, v in w.items()})


# --- Test side (Keras 2) ----------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    assert official.official_model_py(), (
        "useful-moonshine is missing: `make venv` installs "
        "requirements-test.lock")
    out_dir = str(tmp_path_factory.mktemp("official_checkpoints"))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), out_dir],
                          env=official.subprocess_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out_dir, dict(np.load(os.path.join(out_dir, "outputs.npz")))


def _official_config():
    from models import config
    return dataclasses.replace(
        config.get_preset(PRESET).model.with_vocabulary(
            config.MOONSHINE_BPE_VOCABULARY),
        frontend="waveform", dropout=0.0)


def _outputs(model, dump):
    import tensorflow as tf
    audio = tf.constant(dump["audio"][None])
    encoded, lengths = model.encode(audio, tf.constant([AUDIO_SAMPLES]))
    logits = model.decode(dump["tokens"], encoded, lengths)
    return encoded.numpy()[0], logits.numpy()[0]


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_after_import_weights(layout, checkpoints, tmp_path):
    """import-weights output, loaded as the Trainer would, reproduces the
    official model's outputs; every variable equals the reference copy."""
    from models import moonshine
    from models import weights

    out_dir, dump = checkpoints
    cfg = _official_config()
    report = weights.import_weights(os.path.join(out_dir, layout), cfg,
                                    str(tmp_path))
    assert report.initialised == [] and set(report.skipped) <= {
        weights.PROJ_OUT}
    model = moonshine.Moonshine(cfg)
    weights.load_initial_weights(model, str(tmp_path))
    encoded, logits = _outputs(model, dump)
    assert np.abs(encoded - dump["encoded"]).max() < TOLERANCE
    assert np.abs(logits - dump["logits"]).max() < TOLERANCE

    reference = moonshine.Moonshine(cfg)
    official.load_into(reference, {k[2:]: v for k, v in dump.items()
                                   if k.startswith("w/")})
    for ours, ref in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(ours.numpy(), ref.numpy(), ours.name)


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_official_checkpoint_loads_directly(layout, checkpoints):
    from models import moonshine
    from models import weights

    out_dir, dump = checkpoints
    model = moonshine.Moonshine(_official_config())
    report = weights.load_initial_weights(model, os.path.join(out_dir, layout))
    assert report.layout == layout
    _, logits = _outputs(model, dump)
    assert np.abs(logits - dump["logits"]).max() < TOLERANCE


@pytest.mark.slow
def test_character_preset_takes_everything_but_embedding_and_stem(
        checkpoints, tmp_path):
    """The tiny preset (log-mel stem, 31 characters): the transformer layers
    are imported, the BPE embedding and the waveform stem are not."""
    from models import config
    from models import moonshine
    from models import weights

    out_dir, dump = checkpoints
    cfg = config.get_preset(PRESET).model
    report = weights.import_weights(os.path.join(out_dir, "keras_h5"), cfg,
                                    str(tmp_path))
    assert weights.EMBEDDING in report.skipped
    assert "vocabulary of 32768" in report.skipped[weights.EMBEDDING]
    stem = [n for n in report.skipped if "conv" in n or "groupnorm" in n]
    assert len(stem) == 7  # conv1 (no bias), groupnorm, conv2, conv3 (w, b)
    assert all("'log_mel'" in report.skipped[n] for n in stem)
    model = moonshine.Moonshine(cfg)
    before = {v.name: v.numpy() for v in model.weights}
    loaded = weights.load_initial_weights(model, str(tmp_path))
    assert sorted(loaded.imported) == sorted(report.imported)
    kept = {v.name for v in model.weights
            if np.array_equal(v.numpy(), before[v.name])}
    assert set(loaded.initialised) == kept
    assert any("embedding" in n for n in kept)
    assert any("log_mel_frontend" in n for n in kept)
    assert not any("layer" in n and "frontend" not in n for n in kept), kept
    # The imported attention kernel is the official one, [dim, H, D] flattened.
    q = model.encoder.blocks[0].attention.q_proj.kernel.numpy()
    np.testing.assert_array_equal(q, dump["w/enc.0.attn.q"].reshape(
        cfg.dim, -1))


@pytest.mark.slow
def test_cli_import_weights_and_size_mismatch(checkpoints, tmp_path, capsys):
    from models import weights
    from tools import cli

    out_dir, _ = checkpoints
    source = os.path.join(out_dir, "safetensors")
    dest = str(tmp_path / "imported")
    assert cli.main(["import-weights", source, "--preset", PRESET,
                     "--output-dir", dest]) == 0
    out = capsys.readouterr().out
    assert "imported" in out and "--init-from" in out
    assert os.path.exists(os.path.join(dest, weights.HF_WEIGHTS_FILE))
    with open(os.path.join(dest, weights.IMPORT_REPORT_FILE)) as f:
        assert json.load(f)["model_config"]["dim"] == 288

    # A tiny checkpoint does not fit the base preset: one clear line.
    assert cli.main(["import-weights", source, "--preset", "base",
                     "--output-dir", str(tmp_path / "base")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "heads" in err or "shape" in err
    assert not os.path.exists(tmp_path / "base")


def test_a_checkpoint_with_other_rotary_embeddings_is_refused(tmp_path):
    import tf_keras as keras

    from models import config
    from models import moonshine
    from models import weights

    tiny = config.get_preset("tiny").model
    keras.utils.set_random_seed(3)
    weights.write_safetensors(weights.to_hf(moonshine.Moonshine(tiny)),
                              str(tmp_path / weights.HF_WEIGHTS_FILE))
    hf_config = {"hidden_size": tiny.dim,
                 "encoder_num_attention_heads": tiny.n_heads,
                 "decoder_num_attention_heads": tiny.n_heads,
                 "partial_rotary_factor": 0.9, "rope_theta": 10000.0}

    def load(**overrides):
        with open(tmp_path / weights.HF_CONFIG_FILE, "w") as f:
            json.dump(dict(hf_config, **overrides), f)
        return weights.load_initial_weights(moonshine.Moonshine(tiny),
                                            str(tmp_path))
    # 36-dim heads x 0.9 -> 32, as ours: all but our log-mel stem imports.
    report = load()
    assert report.imported
    assert all("log_mel_frontend" in n for n in report.initialised), \
        report.initialised
    with pytest.raises(weights.CheckpointError,
                       match=r"rotary embeddings on 18 dims .* rotates 32"):
        load(partial_rotary_factor=0.5)
    with pytest.raises(weights.CheckpointError, match="base 500000"):
        load(rope_theta=500000.0)


def test_reference_packages_are_the_pinned_ones():
    """`make venv` installs requirements-test.lock: the parity and import
    tests run against exactly these, never skip for want of them."""
    import re
    from importlib import metadata

    with open(os.path.join(REPO_ROOT, "requirements-test.lock")) as f:
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", f.read(), re.MULTILINE)
    assert dict(pins).keys() >= {"useful-moonshine", "einops"}
    for name, version in pins:
        assert metadata.version(name) == version, (
            f"{name} {metadata.version(name)} installed, {version} pinned: "
            "run `make venv`")
    assert official.official_model_py() is not None


def test_unreadable_checkpoints_are_clear_errors(tmp_path):
    from models import config
    from models import moonshine
    from models import weights

    model = moonshine.Moonshine(config.get_preset("ci").model)
    with pytest.raises(weights.CheckpointError, match="neither"):
        weights.load_initial_weights(model, str(tmp_path))
    bad = tmp_path / weights.HF_WEIGHTS_FILE
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(weights.CheckpointError, match="safetensors"):
        weights.load_initial_weights(model, str(tmp_path))
    assert weights.load_initial_weights(model, None) is None
    assert weights.load_initial_weights(model, "") is None


def test_embedding_transfers_into_the_bpe_vocabulary_only(tmp_path):
    """The official embedding's rows are BPE ids: a model of the BPE
    vocabulary takes them; a character model does not, even one whose
    embedding has as many rows."""
    import tf_keras as keras

    from models import config
    from models import moonshine
    from models import weights

    ci = config.get_preset("ci").model
    bpe_config = ci.with_vocabulary(config.MOONSHINE_BPE_VOCABULARY)
    keras.utils.set_random_seed(5)
    source = moonshine.Moonshine(bpe_config)
    weights.write_safetensors(weights.to_hf(source),
                              str(tmp_path / weights.HF_WEIGHTS_FILE))
    source_embedding = source.decoder.embedding.embeddings.numpy()
    assert source_embedding.shape[0] == official.OFFICIAL_VOCAB

    target = moonshine.Moonshine(bpe_config)
    report = weights.load_initial_weights(target, str(tmp_path))
    assert weights.EMBEDDING in report.imported and not report.skipped
    np.testing.assert_array_equal(
        target.decoder.embedding.embeddings.numpy(), source_embedding)

    for other in (ci, dataclasses.replace(
            ci, vocab_size=config.MOONSHINE_BPE_VOCAB_SIZE)):
        model = moonshine.Moonshine(other)
        report = weights.load_initial_weights(model, str(tmp_path))
        why = report.skipped[weights.EMBEDDING]
        assert "'characters'" in why and "moonshine_bpe" in why, why
        assert any("embedding" in n for n in report.initialised)


def test_cli_init_from_checks_the_vocabulary_it_trains(tmp_path):
    """`run --init-from` is checked against the preset as --vocabulary
    makes it: an official-size embedding fits either way, and is imported
    only with the BPE vocabulary (above)."""
    import tf_keras as keras

    from models import config
    from models import moonshine
    from models import weights
    from tools import cli

    keras.utils.set_random_seed(6)
    source = moonshine.Moonshine(config.get_preset("ci").model.with_vocabulary(
        config.MOONSHINE_BPE_VOCABULARY))
    weights.write_safetensors(weights.to_hf(source),
                              str(tmp_path / weights.HF_WEIGHTS_FILE))
    for vocabulary in (None, config.MOONSHINE_BPE_VOCABULARY):
        preset = config.get_preset("ci").with_overrides(vocabulary)
        assert cli._check_init_from(str(tmp_path), preset) == str(tmp_path)
    with pytest.raises(cli.CliError, match="init-from"):
        cli._check_init_from(str(tmp_path), config.get_preset(
            "demo").with_overrides(config.MOONSHINE_BPE_VOCABULARY))


def test_round_trip_through_hf_names(tmp_path):
    """Our weights out in HF names and back in are the same model (but for
    our CTC head, which Moonshine checkpoints do not hold)."""
    import tf_keras as keras

    from models import config
    from models import moonshine
    from models import weights

    cfg = dataclasses.replace(config.get_preset("ci").model,
                              frontend="waveform")
    keras.utils.set_random_seed(3)
    source = moonshine.Moonshine(cfg, with_ctc_head=True)
    weights.write_safetensors(weights.to_hf(source),
                              str(tmp_path / weights.HF_WEIGHTS_FILE))
    keras.utils.set_random_seed(4)
    target = moonshine.Moonshine(cfg, with_ctc_head=True)
    report = weights.load_initial_weights(target, str(tmp_path))
    assert report.initialised == [] and report.skipped == {}
    ctc_head = {v.name for v in source.ctc_head.weights}
    assert ctc_head and not any("ctc" in n for n in weights.to_hf(source))
    for a, b in zip(source.weights, target.weights):
        if a.name not in ctc_head:
            np.testing.assert_array_equal(a.numpy(), b.numpy(), a.name)


if __name__ == "__main__":
    _write_official(sys.argv[1])


def test_moonshine_checkpoints_refuse_a_model_with_absolute_positions(
        tmp_path):
    """Moonshine's weights were trained with rotary positions only: they are
    neither imported into nor exported from a model that adds sinusoids."""
    import tf_keras as keras

    from models import config
    from models import moonshine
    from models import weights

    keras.utils.set_random_seed(4)
    cfg = config.get_preset("ci").model
    path = str(tmp_path / weights.HF_WEIGHTS_FILE)
    weights.write_safetensors(weights.to_hf(moonshine.Moonshine(cfg)), path)
    absolute = moonshine.Moonshine(dataclasses.replace(
        cfg, absolute_positions=True))
    with pytest.raises(weights.CheckpointError,
                       match=r"no absolute encoder positions"):
        weights.plan_import(absolute, weights.read_checkpoint(path))
    with pytest.raises(weights.CheckpointError, match="rotary positions only"):
        weights.to_hf(absolute)
