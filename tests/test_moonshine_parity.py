"""Parity with the official Moonshine Keras model (useful-moonshine 20241016).

The official model is Keras 3 and this process is Keras 2, so a subprocess
with TF_USE_LEGACY_KERAS=0 (this file run as a script) builds it with random
weights, randomises its norms and biases too, and dumps weights and outputs
for fixed audio to .npz. The test copies the weights into our 'waveform'
Moonshine with the paper's 32,768 vocabulary and compares the stem, encoder
and decoder outputs, batching both utterances together (so padding masks are
exercised as well: the official model runs one utterance, unpadded).

Needs `pip install --no-deps useful-moonshine==20241016 einops`; the loading,
weight randomisation and weight mapping live in benchmarks/official.py (shared
with benchmarks/bench_decoding.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run as a script (the Keras 3 subprocess)

from benchmarks import official  # noqa: E402
from benchmarks.official import OFFICIAL_VOCAB  # noqa: E402

PRESETS = ("tiny", "base")
AUDIO_SAMPLES = (16_000, 37_000)  # 1 s and 2.3 s
NUM_TOKENS = 11
TOLERANCE = 1e-4
SEED = 1234


# --- Subprocess side (Keras 3) ----------------------------------------------

def _dump_official(out_dir: str) -> None:
    import keras  # Keras 3: TF_USE_LEGACY_KERAS=0 in this process

    from models import config

    official_module = official.load_official_module()
    rng = np.random.default_rng(SEED)
    audio = [0.3 * rng.standard_normal(n).astype(np.float32)
             for n in AUDIO_SAMPLES]
    tokens = np.concatenate([[config.SOS_ID], rng.integers(
        3, OFFICIAL_VOCAB, NUM_TOKENS - 1)]).astype(np.int32)[None]

    for preset in PRESETS:
        c = config.get_preset(preset).model
        keras.utils.set_random_seed(SEED)
        model = official.build_official(official_module, c, OFFICIAL_VOCAB)
        weights = official.randomise_official_weights(keras, model, rng)
        out = {f"w/{k}": v for k, v in weights.items()}
        out["tokens"] = tokens
        out["trainable_params"] = np.int64(
            official.official_trainable_params(model))
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


# --- Test side (Keras 2) ----------------------------------------------------

@pytest.fixture(scope="module")
def official_dumps(tmp_path_factory):
    if official.official_model_py() is None:
        pytest.skip(official.INSTALL_HINT)
    out_dir = str(tmp_path_factory.mktemp("official_moonshine"))
    env = official.subprocess_env()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), out_dir],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return {p: dict(np.load(os.path.join(out_dir, f"{p}.npz")))
            for p in PRESETS}


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
    official.load_into(model, weights)

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
