"""The TFLite export (models/tflite.py) beside the SavedModel, and
`transcribe --model PATH.tflite`.

One `ci`-preset model with random weights that listen (tests/ci_serving.py)
is exported by the ModelExporter's own `export_fn`, decoding greedily, so
its SavedModel and its TFLite files hold the same weights and decode the
same way; the tokens are compared on embedded test-clean clips.
"""

import dataclasses
import glob
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from models import config
from models import serving
from tools import transcribe

import ci_serving
from conftest import EMBEDDED_CORPUS, REPO_ROOT

CLIPS = 6  # embedded test-clean utterances compared, spread over speakers
INT8_MAX_WEIGHT_FRACTION = 0.30  # issue 16's bound on the int8 file
INT8_MIN_AGREEMENT = 0.5
BEAM_MIN_AGREED_PREFIX = 0.75  # of each clip's tokens, before any float tie  # of token positions, on a random, touchy model


def _clips():
    paths = sorted(glob.glob(os.path.join(EMBEDDED_CORPUS, "test-clean", "*",
                                          "*", "*.flac")))
    return paths[::len(paths) // CLIPS][:CLIPS]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(serving model dir of export_fn, its export seconds, the Transform
    graph dir, the trained model dir)."""
    preset = dataclasses.replace(config.get_preset("ci"),
                                 decode=config.DecodeConfig(beam_width=1))
    transform_dir = ci_serving.analyse_transform(
        str(tmp_path_factory.mktemp("transform")))
    trained = str(tmp_path_factory.mktemp("trained"))
    serving.save_trained(ci_serving.random_model(preset, listening=True),
                         preset, trained)
    serving_dir = str(tmp_path_factory.mktemp("serving") / "1")
    start = time.perf_counter()
    serving.export_fn(serving.ExportArgs(trained, transform_dir, serving_dir,
                                         preset.decode))
    return (serving_dir, time.perf_counter() - start, transform_dir,
            trained)


def _lite(serving_dir, variant):
    from models import tflite
    with open(os.path.join(serving_dir, config.TFLITE_FILES[variant]),
              "rb") as f:
        return tflite.LiteModel(f.read(), config.CHARACTER_VOCABULARY)


def _saved_model_ids(signature, audio):
    import tensorflow as tf
    ids = list(signature(audio=tf.constant(audio[None]), num_samples=tf.constant(
        [len(audio)], tf.int64))[config.TOKENS_OUTPUT_KEY].numpy()[0])
    return ids[:ids.index(config.EOS_ID) + 1] \
        if config.EOS_ID in ids else [i for i in ids if i != config.PAD_ID]


@pytest.fixture(scope="module")
def saved_model_tokens(exported):
    """{clip: the SavedModel's greedy tokens, up to and with </s>}."""
    import tensorflow as tf
    signature = tf.saved_model.load(exported[0]).signatures[
        config.TRANSCRIBE_SIGNATURE]
    return {path: _saved_model_ids(signature, sf.read(path, dtype="float32")[0])
            for path in _clips()}


def _lite_tokens(serving_dir, variant):
    model = _lite(serving_dir, variant)
    return {path: model.greedy_tokens(sf.read(path, dtype="float32")[0])
            for path in _clips()}


@pytest.mark.slow
def test_export_writes_both_variants_with_the_saved_model(exported):
    serving_dir, seconds = exported[:2]
    print(f"export_fn (SavedModel + TFLite), ci preset: {seconds:.1f} s")
    assert os.path.exists(os.path.join(serving_dir, "saved_model.pb"))
    for name in config.TFLITE_FILES.values():
        assert os.path.getsize(os.path.join(serving_dir, name)) > 0


@pytest.mark.slow
def test_signatures_have_the_expected_inputs_and_outputs(exported):
    from models import tflite
    model = _lite(exported[0], config.TFLITE_FLOAT32)
    c = config.get_preset("ci").model
    signatures = model.interpreter.get_signature_list()
    per_layer = [tflite.layer_input(kind, i) for kind in tflite.LAYER_INPUTS
                 for i in range(c.dec_layers)]
    assert signatures == {
        config.TFLITE_ENCODE_SIGNATURE: {
            "inputs": [tflite.AUDIO],
            "outputs": sorted([tflite.CROSS_KEYS, tflite.CROSS_VALUES,
                               tflite.ENCODED, tflite.ENCODED_LENGTH])},
        config.TFLITE_DECODE_STEP_SIGNATURE: {
            "inputs": sorted(per_layer + [tflite.POSITION, tflite.TOKEN]),
            "outputs": sorted([tflite.KEYS_VALUES, tflite.LOGITS])}}
    keys = [1, c.n_heads, -1, c.head_dim]
    values = [1, c.n_heads, c.head_dim, -1]  # transposed
    step = model.step.get_input_details()
    for i in range(c.dec_layers):
        for kind, shape in ((tflite.CACHE_KEYS, keys),
                            (tflite.CACHE_VALUES, values),
                            (tflite.CROSS_KEYS, keys),
                            (tflite.CROSS_VALUES, values)):
            assert list(step[tflite.layer_input(kind, i)][
                "shape_signature"]) == shape
    assert list(model.step.get_output_details()[tflite.KEYS_VALUES][
        "shape_signature"]) == [c.dec_layers, 2, c.n_heads, c.head_dim]
    encoded = model.encoder.get_output_details()
    assert list(encoded[tflite.CROSS_KEYS]["shape_signature"]) == [
        c.dec_layers, *keys]
    assert list(encoded[tflite.CROSS_VALUES]["shape_signature"]) == [
        c.dec_layers, *values]
    assert list(model.encoder.get_input_details()[tflite.AUDIO][
        "shape_signature"]) == [1, -1]
    assert model.vocab_size == c.vocab_size


@pytest.mark.slow
def test_float_tokens_equal_the_saved_models(exported, saved_model_tokens):
    lite = _lite_tokens(exported[0], config.TFLITE_FLOAT32)
    assert lite == saved_model_tokens
    # Not vacuous: the model's text depends on the audio.
    assert len({tuple(t) for t in lite.values()}) > 1


@pytest.mark.slow
def test_float_beam_tokens_equal_the_saved_models_beam(exported, tmp_path):
    """The host beam search against the serving graph's, same weights: a
    SavedModel exported with a beam from the trained weights beside it."""
    import tensorflow as tf
    import tensorflow_transform as tft

    serving_dir = exported[0]
    model, preset = serving.load_trained(exported[3])
    decode = config.DecodeConfig(beam_width=3, length_penalty=1.0)
    beam_dir = str(tmp_path / "beam")
    serving.export_serving_model(
        model, tft.TFTransformOutput(exported[2]),
        dataclasses.replace(preset, decode=decode), beam_dir)
    signature = tf.saved_model.load(beam_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]
    lite = _lite(serving_dir, config.TFLITE_FLOAT32)
    beams, greedy, agree = {}, {}, []
    for path in _clips():
        audio = sf.read(path, dtype="float32")[0]
        beams[path] = lite.tokens(audio, decode)
        greedy[path] = lite.greedy_tokens(audio)
        ref = _saved_model_ids(signature, audio)
        assert len(beams[path]) == len(ref), path
        agree.append(next((i for i, (a, b) in enumerate(zip(beams[path], ref))
                           if a != b), len(ref)) / len(ref))
    # A random model's near-uniform log-probs summed over hundreds of steps
    # make float32 near-ties that TFLite's kernels and TF's may break
    # differently (seen once, at token 275 of 310); a wrong search diverges
    # within the first steps.
    assert sum(a == 1.0 for a in agree) >= CLIPS - 1, agree
    assert min(agree) >= BEAM_MIN_AGREED_PREFIX, agree
    # Not vacuous: the beam chose otherwise than greedy somewhere.
    assert beams != greedy


@pytest.mark.slow
def test_ctc_decoding_tflite_equals_the_saved_model(exported, tmp_path):
    """A model exported to decode with its CTC head: the host's best path
    over `encode`'s CTC logits equals the serving graph's (float32), and a
    file exported for the attention decoder says it cannot."""
    import tensorflow as tf
    from models import tflite

    ctc = config.DecodeConfig(method=config.CTC_DECODING)
    ctc_dir = str(tmp_path / "ctc" / "1")
    serving.export_fn(serving.ExportArgs(exported[3], exported[2], ctc_dir,
                                         ctc))
    signature = tf.saved_model.load(ctc_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]
    lite = _lite(ctc_dir, config.TFLITE_FLOAT32)
    assert tflite.CTC_LOGITS in lite.encoder.get_output_details()
    lite_ids, saved_ids = {}, {}
    for path in _clips():
        audio = sf.read(path, dtype="float32")[0]
        lite_ids[path] = lite.tokens(audio, ctc)
        saved_ids[path] = _saved_model_ids(signature, audio)
    assert lite_ids == saved_ids
    # Not vacuous: the tokens depend on the audio.
    assert len({tuple(t) for t in lite_ids.values()}) > 1
    audio = sf.read(_clips()[0], dtype="float32")[0]
    with pytest.raises(ValueError, match="no 'ctc_logits' output"):
        _lite(exported[0], config.TFLITE_FLOAT32).tokens(audio, ctc)


@pytest.mark.slow
def test_int8_is_small_and_mostly_agrees(exported, saved_model_tokens):
    from models import tflite
    serving_dir = exported[0]
    paths = {v: os.path.join(serving_dir, name)
             for v, name in config.TFLITE_FILES.items()}
    weights = {v: tflite.constant_bytes(p) for v, p in paths.items()}
    files = {v: os.path.getsize(p) for v, p in paths.items()}
    print(f"float32 {files['float32']} B ({weights['float32']} B weights), "
          f"int8 {files['int8']} B ({weights['int8']} B weights)")
    # The ci model's weights are smaller than the graph around them and
    # than the mel filterbank, which stays float32 in both files (its input
    # spans too many orders of magnitude for int8), so the bound is on the
    # other weights here; on the demo preset's the whole file meets it.
    filterbank = 4 * config.N_MELS * (config.FFT_LENGTH // 2 + 1)
    assert (weights["int8"] - filterbank
            <= INT8_MAX_WEIGHT_FRACTION * (weights["float32"] - filterbank))
    assert files["int8"] < files["float32"]
    # Every FULLY_CONNECTED weight of the int8 file is int8 but the
    # filterbank's and those too small for the converter to quantise.
    from tensorflow.lite.python import schema_py_generated as schema
    with open(paths["int8"], "rb") as f:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(
            f.read(), 0))
    codes = [c.builtinCode or c.deprecatedBuiltinCode
             for c in model.operatorCodes]
    kinds = [(list(g.tensors[op.inputs[1]].shape), g.tensors[op.inputs[1]].type)
             for g in model.subgraphs for op in g.operators
             if codes[op.opcodeIndex] == schema.BuiltinOperator.FULLY_CONNECTED
             and model.buffers[g.tensors[op.inputs[1]].buffer].data is not None]
    float32 = [shape for shape, kind in kinds
               if kind == schema.TensorType.FLOAT32
               and np.prod(shape) >= 1024]  # the converter's threshold
    assert float32 == [[config.N_MELS, config.FFT_LENGTH // 2 + 1]], kinds
    assert sum(kind == schema.TensorType.INT8 for _, kind in kinds) > 1
    lite = _lite_tokens(serving_dir, config.TFLITE_INT8)
    same = sum(a == b for clip in lite
               for a, b in zip(lite[clip], saved_model_tokens[clip]))
    total = sum(len(t) for t in saved_model_tokens.values())
    print(f"int8 tokens agreeing with the SavedModel's: {same}/{total}")
    assert same >= INT8_MIN_AGREEMENT * total


@pytest.mark.slow
def test_tflite_evaluator_decodes_the_files_as_the_saved_model(exported):
    """The TFLiteEvaluator's decoders, greedy as the exported SavedModel:
    the float32 file's (text, tokens) are the SavedModel's."""
    from components.tflite_evaluator import executor
    serving_dir = exported[0]
    saved = executor.saved_model_decoder(serving_dir)
    lite = {v: executor.tflite_decoder(os.path.join(serving_dir, name),
                                       config.DecodeConfig(beam_width=1))
            for v, name in config.TFLITE_FILES.items()}
    for path in _clips()[:2]:
        audio = sf.read(path, dtype="float32")[0]
        assert lite[config.TFLITE_FLOAT32](audio) == saved(audio)
        text, tokens = lite[config.TFLITE_INT8](audio)
        assert isinstance(text, str) and tokens > 0


def _bad_files(directory):
    """Files that fail (each for another reason) around two good ones."""
    good = os.path.join(directory, "good.flac")
    sf.write(good, sf.read(_clips()[0], dtype="float32")[0], config.SAMPLE_RATE)
    empty = os.path.join(directory, "empty.wav")
    sf.write(empty, np.zeros(0, np.float32), config.SAMPLE_RATE,
             subtype="FLOAT")
    nan = os.path.join(directory, "nan.wav")
    audio = ci_serving.noise(1.0, seed=4)
    audio[100] = np.nan
    sf.write(nan, audio, config.SAMPLE_RATE, subtype="FLOAT")
    garbage = os.path.join(directory, "garbage.flac")
    with open(garbage, "wb") as f:
        f.write(b"fLaC but not really" * 10)
    rate = 8_000  # resampled, as on the SavedModel path
    resampled = os.path.join(directory, "x8k.wav")
    sf.write(resampled, ci_serving.noise(1.5 * rate / config.SAMPLE_RATE,
                                         seed=6), rate, subtype="FLOAT")
    return [good, empty, nan, garbage, os.path.join(directory, "missing.wav"),
            resampled]


@pytest.mark.slow
def test_cli_reads_tflite_with_the_saved_models_errors(exported, tmp_path,
                                                       capsys):
    from tools import cli
    serving_dir = exported[0]
    files = _bad_files(str(tmp_path))
    assert cli.main(["transcribe", "--model", serving_dir, *files]) == 1
    expected = capsys.readouterr()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    run = subprocess.run(
        [sys.executable, "-m", "tools.cli", "transcribe", "--model",
         os.path.join(serving_dir, config.TFLITE_FILES["float32"]), *files],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    errors = [l for l in run.stderr.splitlines() if l.startswith("error")]
    assert errors == [l for l in expected.err.splitlines()
                      if l.startswith("error")]
    assert len(errors) == 4 and run.stderr.strip().endswith(
        "4 of 6 files failed")
    assert run.stdout == expected.out  # greedy both: the same texts


@pytest.mark.slow
def test_long_audio_is_split_as_on_the_saved_model_path(exported, tmp_path):
    import io
    serving_dir = exported[0]
    audio = np.concatenate([sf.read(p, dtype="float32")[0]
                            for p in _clips()[:2]])
    path = str(tmp_path / "long.wav")
    sf.write(path, audio, config.SAMPLE_RATE, subtype="FLOAT")
    texts = []
    for model in (serving_dir, os.path.join(
            serving_dir, config.TFLITE_FILES["float32"])):
        out = io.StringIO()
        assert transcribe.transcribe_files(transcribe.transcriber(model),
                                           [path], 2.0, out=out) == 0
        texts.append(out.getvalue())
    assert len(transcribe.split_long_audio(audio, 2.0)) > 2
    assert texts[0] == texts[1] and texts[0].strip()


@pytest.mark.slow
def test_transcriber_checks_input_as_the_signature_does(exported):
    import tensorflow as tf
    serving_dir = exported[0]
    lite = transcribe.tflite_transcriber(
        os.path.join(serving_dir, config.TFLITE_FILES["int8"]))
    clean = ci_serving.noise(0.5)
    nan = clean.copy()
    nan[10] = np.nan
    cases = [(nan[None], [len(nan)], serving.NON_FINITE_MESSAGE),
             (clean[None], [0], serving.EMPTY_AUDIO_MESSAGE),
             (clean[None], [1, 2], serving.ROW_COUNT_MESSAGE),
             (clean[None], [len(clean) + 1], serving.TOO_LONG_MESSAGE)]
    for audio, lengths, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            lite(audio, lengths)
        assert e.value.message == message


def test_missing_or_foreign_tflite_is_a_usage_error(tmp_path, capsys):
    from tools import cli
    wav = tmp_path / "a.wav"
    sf.write(wav, ci_serving.noise(1.0), config.SAMPLE_RATE)
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(b"not a flatbuffer" * 4)
    for model, problem in ((tmp_path / "nowhere.tflite", "no such file"),
                           (foreign, "not a converted Moonshine model")):
        assert cli.main(["transcribe", "--model", str(model), str(wav)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --model {model}: {problem}")
        assert len(err.strip().splitlines()) == 1


def test_a_file_of_the_whole_cache_export_is_a_clear_error(tmp_path,
                                                           capsys):
    """A file exported before the per-layer cache (decode_step taking the
    whole `cache` and `cross_keys_values`) is refused with what to do."""
    import tensorflow as tf
    from models import tflite
    from tools import cli

    def spec(shape, name, dtype=tf.float32):
        return tf.TensorSpec(shape, dtype, name=name)

    def encode(audio):
        return {tflite.ENCODED: audio * 2.0}

    def decode_step(token, position, cache, cross_keys_values):
        return {tflite.LOGITS: tf.cast(token + position, tf.float32)[None],
                "cache": cache + cross_keys_values}
    whole = [1, 2, 2, None, 4]
    saved = str(tmp_path / "old")
    tf.saved_model.save(tf.Module(), saved, signatures={
        config.TFLITE_ENCODE_SIGNATURE: tf.function(
            encode).get_concrete_function(spec([1, None], tflite.AUDIO)),
        config.TFLITE_DECODE_STEP_SIGNATURE: tf.function(
            decode_step).get_concrete_function(
                spec([1], tflite.TOKEN, tf.int32),
                spec([], tflite.POSITION, tf.int32), spec(whole, "cache"),
                spec(whole, "cross_keys_values"))})
    model = tmp_path / "old.tflite"
    model.write_bytes(tflite.convert(saved, config.TFLITE_FLOAT32))
    wav = tmp_path / "a.wav"
    sf.write(wav, ci_serving.noise(1.0), config.SAMPLE_RATE)
    assert cli.main(["transcribe", "--model", str(model), str(wav)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model {model}: not a converted Moonshine")
    assert "export the model again" in err and len(err.strip().splitlines()) == 1


def test_vocabulary_without_a_preset_beside_it(tmp_path):
    from models import tflite
    path = str(tmp_path / "m.tflite")
    assert tflite.vocabulary_of(path, config.VOCAB_SIZE) == \
        config.CHARACTER_VOCABULARY
    assert tflite.vocabulary_of(path, config.MOONSHINE_BPE_VOCAB_SIZE) == \
        config.MOONSHINE_BPE_VOCABULARY
    with pytest.raises(ValueError, match="match no vocabulary"):
        tflite.vocabulary_of(path, 1000)


def test_decode_step_beside_the_host_cache_equals_the_scatter_step():
    """The decode_step signature (the cache read-only, position t attended
    beside it) with a HostCache gives the serving step's logits, and the
    host stores what the serving step's scatter writes; past the first
    length of the ladder, with the rows not yet written filled with noise
    (masked, so they must not count)."""
    import tensorflow as tf
    from models import tflite
    model = ci_serving.random_model(config.get_preset("ci"), listening=True)
    c, decoder = model.model_config, model.decoder
    encoded = tf.random.stateless_normal([1, 7, c.dim], [1, 2])
    cross = decoder.cross_keys_values(encoded, tf.constant([7]))
    encode_outputs = {  # as the encode signature gives them
        tflite.CROSS_KEYS: [k for k, _ in cross[0]],
        tflite.CROSS_VALUES: [tf.transpose(v, [0, 1, 3, 2])
                              for _, v in cross[0]]}
    _, decode_step = tflite.signatures(model)
    steps = config.TFLITE_CACHE_FIRST_LENGTH + 5
    serving_cache = decoder.init_cache(1, steps)
    host = tflite.HostCache(c.dec_layers, c.n_heads, c.head_dim, steps)
    noise = np.random.default_rng(0)
    host.keys[:] = noise.normal(size=host.keys.shape)
    host.values[:] = noise.normal(size=host.values.shape)
    token = tf.constant([config.SOS_ID])
    for t in range(steps):
        expected, serving_cache = decoder.step(token, tf.constant(t),
                                               serving_cache, cross)
        out = decode_step(token, tf.constant(t), *host.keys, *host.values,
                          *encode_outputs[tflite.CROSS_KEYS],
                          *encode_outputs[tflite.CROSS_VALUES])
        np.testing.assert_allclose(out[tflite.LOGITS].numpy(),
                                   expected.numpy(), rtol=1e-5, atol=1e-5)
        host.write(t, out[tflite.KEYS_VALUES].numpy())
        token = tf.argmax(expected, axis=-1, output_type=tf.int32)
    assert host.length == steps  # grown once, to the cap
    for i, (keys, values) in enumerate(serving_cache):
        assert np.array_equal(host.keys[i], keys.numpy())
        assert np.array_equal(host.values[i],
                              np.swapaxes(values.numpy(), 2, 3))


def test_pusher_holds_back_a_variant_out_of_tolerance(tmp_path):
    """The Pusher's gate on a TFLiteEvaluator result: the variant over its
    WER tolerance leaves the pushed version, the other stays; both are
    recorded on the PushedModel."""
    import json
    from tfx.types import standard_artifacts
    from components.pusher import executor
    from components.tflite_evaluator.executor import EVALUATION_FILE

    pushed_dir, evaluation = tmp_path / "serving" / "1", tmp_path / "eval"
    pushed_dir.mkdir(parents=True)
    evaluation.mkdir()
    for name in config.TFLITE_FILES.values():
        (pushed_dir / name).write_bytes(b"tflite")
    base = {"wer": 0.100}
    variants = {config.SAVED_MODEL_VARIANT: base,
                config.TFLITE_FLOAT32: {"wer": 0.101, "wer_increase": 0.001,
                                        "within_tolerance": True},
                config.TFLITE_INT8: {"wer": 0.150, "wer_increase": 0.05,
                                     "within_tolerance": False}}
    (evaluation / EVALUATION_FILE).write_text(json.dumps(
        {"variants": variants}))
    pushed = standard_artifacts.PushedModel()
    executor.gate_tflite_variants(str(evaluation), str(pushed_dir), pushed)
    assert (pushed_dir / config.TFLITE_FILES[config.TFLITE_FLOAT32]).exists()
    assert not (pushed_dir / config.TFLITE_FILES[config.TFLITE_INT8]).exists()
    assert pushed.get_int_custom_property("tflite_float32_pushed") == 1
    assert pushed.get_int_custom_property("tflite_int8_pushed") == 0
    assert abs(pushed.get_float_custom_property("tflite_int8_wer")
               - 0.15) < 1e-9
