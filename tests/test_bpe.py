"""The official Moonshine BPE vocabulary: models/bpe.py against the official
tokenizer, and through the pipeline's own ExampleGen, Transform and serving
export.

The reference is useful-moonshine's own tokenizer.json (a test dependency)
read with `tokenizers`; the product reads its vendored copy. The pipeline
tests run the LibriSpeechExampleGen and Transform exactly as
`create_pipeline` wires them for the `ci` preset with the BPE vocabulary, on
a few real utterances of the embedded corpus (tests/pipeline_steps.py), and
export a serving model over that Transform graph. Training on BPE targets is
tested with the waveform front end (tests/test_trainer.py).
"""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import pipeline_steps
from conftest import EMBEDDED_CORPUS
from models import bpe
from models import config
from benchmarks import official

BPE = config.MOONSHINE_BPE_VOCABULARY

# Byte fallback: the accented letters, CJK and the emoji below are not all
# pieces of the vocabulary, so their UTF-8 bytes are encoded one by one.
SENTENCES = [
    "HELLO WORLD",
    "IT'S A DOG'S LIFE ISN'T IT",
    "Ever tried. Ever failed. No matter.",
    "naïve café, Ærøskøbing 日本語 🙂 ß",
    "  spaces   and\ttabs ",
]


def _official_tokenizer():
    import tokenizers
    path = os.path.join(os.path.dirname(official.official_model_py()),
                        "assets", "tokenizer.json")
    return path, tokenizers.Tokenizer.from_file(path)


def _corpus_transcripts(per_chapter=4):
    lines = []
    for path in sorted(glob.glob(os.path.join(EMBEDDED_CORPUS, "*", "*", "*",
                                              "*.trans.txt"))):
        with open(path) as f:
            lines += [line.split(" ", 1)[1].strip()
                      for line in f.readlines()[:per_chapter]]
    assert lines
    return lines


def _official_decode(reference, row):
    """The official decoder on the ids before the first EOS."""
    row = list(row)
    row = row[:row.index(config.EOS_ID)] if config.EOS_ID in row else row
    return reference.decode([i for i in row if 0 <= i < bpe.VOCAB_SIZE])


# --- The vocabulary -----------------------------------------------------------

def test_vendored_tokenizer_is_the_official_file():
    path, reference = _official_tokenizer()
    with open(path, "rb") as a, open(bpe.TOKENIZER_FILE, "rb") as b:
        assert a.read() == b.read()
    assert reference.get_vocab_size() == config.MOONSHINE_BPE_VOCAB_SIZE
    assert official.OFFICIAL_VOCAB == config.MOONSHINE_BPE_VOCAB_SIZE
    assert (reference.token_to_id("<s>"), reference.token_to_id("</s>")) == (
        config.SOS_ID, config.EOS_ID)


def test_encode_matches_the_official_tokenizer():
    _, reference = _official_tokenizer()
    byte_pieces = 0
    for text in SENTENCES + _corpus_transcripts():
        normalized = " ".join(text.lower().split())
        assert bpe.normalize(text) == normalized
        official_ids = reference.encode(normalized).ids  # <s> + pieces
        assert bpe.encode(text) == official_ids + [config.EOS_ID], text
        assert bpe.encode(text.encode(), add_special_tokens=False) == (
            official_ids[1:])
        byte_pieces += sum(bool(bpe.tables().is_byte[i])
                           for i in official_ids)
    assert byte_pieces > 0  # the byte-fallback path was exercised
    # Lower case is the vocabulary's common case: fewer, whole-word pieces.
    assert bpe.encode("HELLO WORLD", add_special_tokens=False) == [
        reference.token_to_id("▁hello"), reference.token_to_id("▁world")]


def test_tf_decode_matches_the_official_decoder():
    _, reference = _official_tokenizer()
    byte = reference.token_to_id
    rows = [bpe.encode(t) for t in SENTENCES + _corpus_transcripts(1)]
    rows += [
        # Stops at EOS; ids after it are ignored.
        bpe.encode("first part") + bpe.encode("not this"),
        # Byte pieces whose run is not UTF-8: one U+FFFD per byte, as the
        # official ByteFallback; a special id inside a run does not split it.
        [config.SOS_ID, byte("<0xE6>"), byte("▁hello"), byte("<0x41>"),
         byte("<0xE6>"), 32005, byte("<0x97>"), config.EOS_ID],
        # A run that is UTF-8 decodes to its character; an encoded surrogate
        # and an overlong slash are not UTF-8.
        [byte("<0xE6>"), byte("<0x97>"), byte("<0xA5>"), byte("<0xED>"),
         byte("<0xA0>"), byte("<0x80>"), byte("▁x"), byte("<0xC0>"),
         byte("<0xAF>")],
        # Special and reserved ids decode to nothing; a leading space from
        # bytes is stripped once, as the official Strip does.
        [config.PAD_ID, byte("<0x20>"), byte("<0x20>"), byte("▁hello"),
         bpe.VOCAB_SIZE - 1, config.SOS_ID],
        [config.EOS_ID, byte("▁hello")],
        [],
    ]
    width = max(len(r) for r in rows)
    dense = np.full([len(rows), width], config.PAD_ID, np.int64)
    for i, row in enumerate(rows):
        dense[i, :len(row)] = row
    expected = [_official_decode(reference, row) for row in rows]
    assert "\ufffd" in "".join(expected) and "日本語" in "".join(expected)
    for ids in (dense, tf.ragged.constant(rows, dtype=tf.int64),
                tf.constant(dense, tf.int32)):
        got = [t.decode("utf-8") for t in bpe.tf_decode(ids).numpy()]
        assert got == expected
    # Ids outside the vocabulary are skipped, as tokenizer.tf_decode does.
    assert bpe.tf_decode([[byte("▁hello"), -5, bpe.VOCAB_SIZE,
                           byte("▁world")]]).numpy().tolist() == [
        b"hello world"]
    assert bpe.tf_decode(tf.zeros([0, 4], tf.int64)).shape == [0]


# --- The config switch ----------------------------------------------------------

def test_model_config_vocabulary_is_validated_and_round_trips():
    ci = config.get_preset("ci")
    assert all(p.model.vocabulary == config.CHARACTER_VOCABULARY
               and p.model.vocab_size == config.VOCAB_SIZE
               for p in config.PRESETS.values())
    model = ci.model.with_vocabulary(BPE)
    assert (model.vocabulary, model.vocab_size) == (
        BPE, config.MOONSHINE_BPE_VOCAB_SIZE)
    preset = dataclasses.replace(ci, model=model)
    assert config.preset_from_dict(json.loads(json.dumps(
        config.preset_to_dict(preset)))) == preset
    # A preset saved before the switch existed reads as characters.
    old = config.preset_to_dict(ci)
    del old["model"]["vocabulary"]
    assert config.preset_from_dict(old) == ci
    with pytest.raises(ValueError, match="smaller than the 'moonshine_bpe'"):
        dataclasses.replace(ci.model, vocabulary=BPE)
    with pytest.raises(ValueError, match="unknown vocabulary 'bpe'"):
        ci.model.with_vocabulary("bpe")


def test_cli_vocabulary_overrides_the_preset():
    from tools import cli

    options = cli.options_from_args(cli.build_parser().parse_args(
        ["run", "--preset", "ci", "--vocabulary", BPE]))
    assert options.preset.name == "ci"
    assert options.preset.model.vocabulary == BPE
    assert options.preset.model.vocab_size == config.MOONSHINE_BPE_VOCAB_SIZE
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--vocabulary", "bpe"])


# --- Through the pipeline ------------------------------------------------------

@pytest.fixture(scope="module")
def bpe_steps(tmp_path_factory):
    """ExampleGen and Transform as create_pipeline wires them for the ci
    preset with the BPE vocabulary (`run --preset ci --vocabulary ...`)."""
    preset = config.get_preset("ci").with_overrides(BPE)
    tmp = str(tmp_path_factory.mktemp("bpe_steps"))
    return preset, pipeline_steps.ingest_and_transform(tmp, preset), tmp


@pytest.mark.slow
def test_example_gen_writes_official_ids_that_the_schema_accepts(bpe_steps):
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from pipeline import pipeline as pipeline_def

    _, steps, tmp = bpe_steps
    _, reference = _official_tokenizer()
    for split, (_, n) in zip(config.SPLITS, pipeline_steps.UTTERANCES):
        examples = pipeline_steps.records(steps.examples.uri, split)
        assert len(examples) == n
        for ex in examples:
            f = ex.features.feature
            transcript = f[config.TRANSCRIPT_KEY].bytes_list.value[0].decode()
            assert transcript.isupper()  # the label stays as ingested
            assert list(f[config.MOONSHINE_BPE_IDS_KEY].int64_list.value) == (
                reference.encode(transcript.lower(),
                                 add_special_tokens=False).ids)
    # The curated schema takes the feature where it is present.
    stats = tfdv.generate_statistics_from_tfrecord(
        os.path.join(steps.examples.uri, "Split-train", "*.gz"),
        output_path=os.path.join(tmp, "stats.tfrecord"))
    with open(pipeline_def.SCHEMA_FILE) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    anomalies = tfdv.validate_statistics(stats, schema)
    assert not anomalies.anomaly_info, anomalies


@pytest.mark.slow
def test_transform_tokens_are_sos_official_ids_eos(bpe_steps):
    preset, steps, _ = bpe_steps
    _, reference = _official_tokenizer()
    for split in config.SPLITS:
        texts = {}
        for ex in pipeline_steps.records(steps.examples.uri, split):
            f = ex.features.feature
            texts[f[config.UTTERANCE_ID_KEY].bytes_list.value[0].decode()] = (
                f[config.TRANSCRIPT_KEY].bytes_list.value[0].decode())
        view = pipeline_steps.trainer_view(steps, preset, split)
        assert set(view) == set(texts)
        for uid, (_, frames, tokens) in view.items():
            assert tokens.tolist() == [config.SOS_ID] + reference.encode(
                texts[uid].lower(), add_special_tokens=False).ids + [
                    config.EOS_ID]
            assert frames > 0


@pytest.mark.slow
def test_serving_model_detokenises_bpe_in_the_graph(bpe_steps, tmp_path):
    """Random weights: the text is the official decoding of whatever ids
    come out, through the SavedModel's own detokeniser."""
    import tensorflow_transform as tft
    import tf_keras as keras

    from models import moonshine
    from models import serving

    preset, steps, _ = bpe_steps
    keras.utils.set_random_seed(0)
    model = moonshine.Moonshine(preset.model)
    # A spread-out final norm makes a random model emit varied tokens.
    gamma = model.decoder.norm.gamma
    gamma.assign(3.0 * tf.random.stateless_normal(gamma.shape, [7, 1]))
    export_dir = str(tmp_path / "serving")
    serving.export_serving_model(
        model, tft.TFTransformOutput(steps.transform_graph.uri), preset,
        export_dir)
    with open(os.path.join(export_dir, serving.PRESET_ASSET)) as f:
        assert json.load(f)["model"]["vocabulary"] == BPE

    transcribe = tf.saved_model.load(export_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]
    audio, lengths = pipeline_steps.padded_audio(steps.data_root, "dev")
    out = transcribe(audio=audio, num_samples=lengths)
    text, ids = out[config.TEXT_OUTPUT_KEY], out[config.TOKENS_OUTPUT_KEY]
    assert text.dtype == tf.string and text.shape == lengths.shape
    ids = ids.numpy()
    assert ((ids >= 0) & (ids < config.MOONSHINE_BPE_VOCAB_SIZE)).all()
    assert (ids >= config.VOCAB_SIZE).any()  # beyond the characters' ids
    _, reference = _official_tokenizer()
    texts = [t.decode("utf-8") for t in text.numpy()]
    assert texts == [_official_decode(reference, row.tolist()) for row in ids]
    assert any(texts)
