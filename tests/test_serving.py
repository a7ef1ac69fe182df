"""The exported SavedModel and the `transcribe` CLI: bad input, resampling,
long audio.

A `ci`-preset Moonshine with random weights is exported with a Transform
graph analysed over a few synthetic utterances (tests/ci_serving.py):
seconds, not a pipeline run. The texts are gibberish but deterministic, which
is all the comparisons below need.
"""

import numpy as np
import pytest
import soundfile as sf
import soxr

from models import config
from models import serving
from tools import transcribe

import ci_serving

RATE = config.SAMPLE_RATE


_noise = ci_serving.noise


# --- split_long_audio ---------------------------------------------------------

def test_short_audio_is_one_segment():
    assert transcribe.split_long_audio(_noise(3.0), window_seconds=30.0) == [
        (0, 3 * RATE)]
    assert transcribe.split_long_audio(_noise(30.0)) == [(0, 30 * RATE)]


def test_long_audio_is_cut_in_its_pauses():
    audio = _noise(70.0)
    pauses = [(26.0, 26.6), (52.0, 52.4)]  # seconds of near-silence
    for a, b in pauses:
        audio[int(a * RATE):int(b * RATE)] *= 1e-3
    bounds = transcribe.split_long_audio(audio)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(audio)
    assert all(end == nxt for (_, end), (nxt, _) in zip(bounds, bounds[1:]))
    assert all(0 < end - start <= 30 * RATE for start, end in bounds)
    cuts = [end / RATE for _, end in bounds[:-1]]
    assert len(cuts) == 2
    for cut, (a, b) in zip(cuts, pauses):
        assert a <= cut <= b, (cut, a, b)


def test_audio_without_pauses_still_fits_the_window():
    audio = _noise(100.0, seed=1)
    bounds = transcribe.split_long_audio(audio, window_seconds=12.0)
    assert all(end - start <= 12 * RATE for start, end in bounds)
    # Each cut lies in the last SPLIT_SEARCH_SECONDS of its window.
    for start, end in bounds[:-1]:
        assert end - start >= (12.0 - config.SPLIT_SEARCH_SECONDS) * RATE
    # The last segment is long enough for the features (one window).
    assert bounds[-1][1] - bounds[-1][0] >= config.WINDOW_SAMPLES
    with pytest.raises(ValueError, match="window"):
        transcribe.split_long_audio(audio, window_seconds=0.1)


# --- The exported model -------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export dir, the in-memory model it was exported from, Transform dir)."""
    import tensorflow_transform as tft

    transform_dir = ci_serving.analyse_transform(
        str(tmp_path_factory.mktemp("transform")))
    preset = config.get_preset("ci")
    model = ci_serving.random_model(preset)
    export_dir = str(tmp_path_factory.mktemp("serving") / "1")
    serving.export_serving_model(model, tft.TFTransformOutput(transform_dir),
                                 preset, export_dir)
    return export_dir, model, transform_dir


@pytest.fixture(scope="module")
def model_dir(exported):
    return exported[0]


@pytest.fixture(scope="module")
def signature(model_dir):
    import tensorflow as tf
    return tf.saved_model.load(model_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]


@pytest.mark.slow
def test_the_serving_graph_decodes_with_the_presets_beam(exported, signature):
    """The SavedModel's tokens are beam_search_decode's with the preset's
    width and length penalty, not greedy decoding's."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import decoding

    _, model, transform_dir = exported
    preset = config.get_preset("ci")
    assert preset.decode.beam_width > 1
    audio = np.stack([_noise(1.5, seed=s) for s in (11, 12, 13)])
    lengths = np.array([len(a) for a in audio], np.int64)
    got = signature(audio=tf.constant(audio),
                    num_samples=tf.constant(lengths))[
                        config.TOKENS_OUTPUT_KEY].numpy()

    tft_output = tft.TFTransformOutput(transform_dir)
    transformed = tft_output.transform_features_layer()(
        serving.raw_audio_features(tf.constant(audio), tf.constant(lengths),
                                   tft_output.raw_feature_spec()))
    n = tf.cast(transformed[config.NUM_FRAMES_KEY], tf.int32)
    mel = tf.reshape(tf.sparse.to_dense(transformed[config.LOG_MEL_KEY]),
                     [len(audio), -1, config.N_MELS])
    encoded, encoded_lengths = model.encode(mel, n)
    cap = decoding.max_tokens_for_duration(
        tf.constant(lengths / config.SAMPLE_RATE, tf.float32))
    beam = decoding.beam_search_decode(
        model, encoded, encoded_lengths, cap,
        beam_width=preset.decode.beam_width,
        length_penalty=preset.decode.length_penalty).numpy()
    greedy = decoding.greedy_decode(model, encoded, encoded_lengths,
                                    cap).numpy()

    def trim(ids):  # up to and including </s>, as a list
        ids = list(ids)
        return ids[:ids.index(config.EOS_ID) + 1] if config.EOS_ID in ids \
            else [i for i in ids if i != config.PAD_ID]
    assert [trim(r) for r in got] == [trim(r) for r in beam]
    # The random model's beam and greedy paths differ, so this is not vacuous.
    assert [trim(r) for r in beam] != [trim(r) for r in greedy]


def _direct(signature, audio):
    """Text of one 16 kHz utterance through the signature, no CLI."""
    import tensorflow as tf
    out = signature(audio=tf.constant(audio[None]),
                    num_samples=tf.constant([len(audio)], tf.int64))
    return out[config.TEXT_OUTPUT_KEY].numpy()[0].decode()


def _cli(model_dir, *args):
    from tools import cli
    return cli.main(["transcribe", "--model", model_dir, *map(str, args)])


@pytest.mark.slow
def test_bad_files_are_named_and_the_rest_transcribed(model_dir, signature,
                                                      tmp_path, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, _noise(1.2, seed=3), RATE, subtype="FLOAT")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), RATE, subtype="FLOAT")
    nan = tmp_path / "nan.wav"
    audio = _noise(1.0, seed=4)
    audio[100] = np.nan
    audio[200] = np.inf
    sf.write(nan, audio, RATE, subtype="FLOAT")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC but not really" * 10)
    short = tmp_path / "short.wav"
    sf.write(short, _noise(0.01), RATE)
    missing = tmp_path / "missing.wav"
    good2 = tmp_path / "good2.flac"
    sf.write(good2, _noise(0.8, seed=5), RATE)

    files = [good, empty, nan, garbage, short, missing, good2]
    assert _cli(model_dir, *files) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    errors = captured.err.strip().splitlines()
    # The ExampleGen's own checks and messages (layout.load_audio).
    expected = {empty: "audio has no samples",
                nan: "2 of 16000 samples are NaN or infinite",
                garbage: "cannot read audio", short: "shorter than the minimum",
                missing: "no such file"}
    for path, problem in expected.items():
        line = next((l for l in errors if f"{path}:" in l), "")
        assert line.startswith("error: ") and problem in line, (path, errors)
    assert errors[-1] == "5 of 7 files failed"
    lines = dict(l.split("\t", 1) for l in captured.out.strip().splitlines())
    assert set(lines) == {str(good), str(good2)}
    audio2, _ = sf.read(good2, dtype="float32")
    assert lines[str(good2)] == _direct(signature, audio2)
    assert lines[str(good2)].strip()  # not empty: the model did decode


@pytest.mark.slow
@pytest.mark.parametrize("rate", [8_000, 44_100])
def test_other_sample_rates_are_resampled(model_dir, signature, tmp_path,
                                          capsys, rate):
    t = np.arange(int(1.5 * rate)) / rate
    audio = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio += _noise(1.5 * rate / RATE, seed=6)[:len(audio)] * 0.1
    stereo = np.stack([audio, audio], axis=1)
    path = tmp_path / f"x{rate}.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    assert _cli(model_dir, path) == 0
    text = capsys.readouterr().out.strip()
    # What the model sees is soxr's 16 kHz resampling of the channels' mean.
    expected = soxr.resample(audio, rate, RATE).astype(np.float32)
    assert abs(len(expected) - 1.5 * RATE) <= 1
    assert text == _direct(signature, expected).strip()


@pytest.mark.slow
def test_long_audio_is_split_and_the_texts_joined(model_dir, signature,
                                                  tmp_path, capsys):
    audio = _noise(7.0, seed=8)
    audio[int(2.6 * RATE):int(2.9 * RATE)] = 0.0  # pauses to cut at
    audio[int(5.2 * RATE):int(5.5 * RATE)] = 0.0
    path = tmp_path / "long.wav"
    sf.write(path, audio, RATE, subtype="FLOAT")
    assert _cli(model_dir, "--window-seconds", 3, path) == 0
    text = capsys.readouterr().out.strip()
    bounds = transcribe.split_long_audio(audio, window_seconds=3.0)
    assert len(bounds) == 3
    pieces = [_direct(signature, audio[a:b]).strip() for a, b in bounds]
    assert text == " ".join(p for p in pieces if p)
    # The default 30 s window takes it whole.
    assert _cli(model_dir, path) == 0
    assert capsys.readouterr().out.strip() == _direct(signature, audio).strip()
    assert _cli(model_dir, "--window-seconds", 0.1, path) == 2
    assert "--window-seconds" in capsys.readouterr().err


@pytest.mark.slow
def test_signature_rejects_bad_input_clearly(signature):
    import tensorflow as tf
    audio = _noise(0.5)
    audio[10] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        signature(audio=tf.constant(audio[None]),
                  num_samples=tf.constant([len(audio)], tf.int64))
    clean = _noise(0.5)
    # A rank-1 tensor gets past the loaded signature's [None, None] spec
    # (TensorFlow's fallback binding); the row count check catches it.
    cases = [(clean, [len(clean)], "one length per audio row \\(audio must"),
             (clean[None], [0], "empty audio"),
             (clean[None], [1, 2], "one length per audio row"),
             (clean[None], [len(clean) + 1], "exceeds the audio length")]
    for audio, lengths, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            signature(audio=tf.constant(audio),
                      num_samples=tf.constant(lengths, tf.int64))


def test_missing_model_is_a_usage_error(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, _noise(1.0), RATE)
    assert _cli(str(tmp_path / "nowhere"), wav) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model") and "Traceback" not in err


@pytest.mark.slow
def test_garbage_audio_decodes_within_the_duration_cap(signature):
    import tensorflow as tf
    from models import decoding
    audio = np.stack([_noise(2.0, seed=9), _noise(2.0, seed=10) * 0])
    audio[1, :RATE // 2] = _noise(0.5, seed=11)
    lengths = np.array([2 * RATE, RATE // 2])
    out = signature(audio=tf.constant(audio),
                    num_samples=tf.constant(lengths, tf.int64))
    ids = out[config.TOKENS_OUTPUT_KEY].numpy()
    caps = decoding.max_tokens_for_duration(lengths / RATE).numpy()
    assert ids.shape[1] <= caps.max()
    assert np.all(ids[1, caps[1]:] == config.PAD_ID)


def test_ctc_export_refuses_weights_without_a_trained_ctc_head(tmp_path):
    """Weights saved without a CTC head (a model trained before the head
    was saved with it) are refused for CTC decoding, not given a random
    head; the attention decoder still loads them."""
    import tf_keras as keras

    from models import moonshine

    preset = config.get_preset("ci")
    keras.utils.set_random_seed(0)
    serving.save_trained(moonshine.Moonshine(preset.model), preset,
                         str(tmp_path))
    with pytest.raises(ValueError, match="no trained CTC head"):
        serving.load_trained(str(tmp_path), with_ctc_head=True)
    model, _ = serving.load_trained(str(tmp_path))
    assert model.ctc_head is None
    serving.save_trained(moonshine.Moonshine(preset.model, with_ctc_head=True),
                         preset, str(tmp_path / "with"))
    model, _ = serving.load_trained(str(tmp_path / "with"), with_ctc_head=True)
    assert model.ctc_head is not None
