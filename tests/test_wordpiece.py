"""The learned WordPiece vocabulary (models/wordpiece.py): learned by a real
TFT analysis on embedded training transcripts, tokenised in the Transform
graph exactly as the `tokenizers` library tokenises, decoded by the serving
graph and by the TFLite host path as the library decodes."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from models import config
from models import serving
from models import tokenizer
from models import wordpiece

import ci_serving
from conftest import EMBEDDED_CORPUS

LEARNED = config.LEARNED_VOCABULARY
SPECIAL = wordpiece.SPECIAL_TOKENS
# Characters per piece on the embedded train transcripts: 256 pieces give
# ~2.4 (measured); a vocabulary that learned nothing gives ~1.
MIN_CHARACTERS_PER_PIECE = 2.0
ANALYSED = 100  # train transcripts in the Transform analysis (~1 s each)
SAME_PIECES = 0.95


def _transcripts(subset):
    return _transcripts_at(os.path.join(EMBEDDED_CORPUS, subset))


@pytest.fixture(scope="module")
def learned():
    train = _transcripts("train-clean")
    return train, wordpiece.train(train)


def test_graph_encoding_is_the_librarys(learned):
    train, vocab = learned
    held_out = _transcripts("test-clean") + _transcripts("test-other")
    # Edge cases: empty, extra whitespace, a word no piece fits (<unk>, as
    # the library), a word past MAX_WORD_CHARS.
    odd = ["", "  A   B  ", "O'ER THE 'TIS", "AÉB", "Q" * 101]
    texts = train + held_out + odd
    assert len(SPECIAL) < len(vocab) <= config.LEARNED_VOCAB_SIZE
    ids = wordpiece.tf_encode(tf.constant(texts), tf.constant(vocab)).to_list()
    for text, row in zip(texts, ids):
        assert row == wordpiece.encode(vocab, text), text
    assert wordpiece.UNK_ID in ids[-2] and ids[-1] == [wordpiece.UNK_ID]
    decoded = wordpiece.tf_decode(tf.ragged.constant(ids), vocab).numpy()
    for text, row, got in zip(texts, ids, decoded):
        assert got.decode() == wordpiece.decode(vocab, row), text
    for text, got in zip(train + held_out, decoded):
        assert got.decode() == " ".join(text.split())
    chars = sum(len(t) for t in train)
    pieces = sum(len(row) for row in ids[:len(train)])
    assert chars / pieces >= MIN_CHARACTERS_PER_PIECE, chars / pieces


def test_decoding_stops_at_eos_and_skips_specials(learned):
    _, vocab = learned
    ids = wordpiece.encode(vocab, "THE HOUSE")
    row = [config.SOS_ID] + ids + [config.EOS_ID] + ids + [config.PAD_ID]
    text = wordpiece.tf_decode(tf.ragged.constant([row, [config.EOS_ID] + ids]),
                               vocab).numpy()
    assert [t.decode() for t in text] == ["THE HOUSE", ""]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, learned):
    """A ci-preset model on the learned vocabulary, exported (SavedModel and
    TFLite) with a Transform graph that learned it from ANALYSED embedded
    train transcripts (each with a short noise clip for audio)."""
    train, _ = learned
    preset = config.get_preset("ci").with_overrides(vocabulary=LEARNED)
    preset = dataclasses.replace(preset,
                                 decode=config.DecodeConfig(beam_width=1))
    transform_dir = ci_serving.analyse_transform(
        str(tmp_path_factory.mktemp("transform")),
        [t.encode() for t in train[:ANALYSED]], preset.model)
    trained = str(tmp_path_factory.mktemp("trained"))
    serving.save_trained(ci_serving.random_model(preset, listening=True),
                         preset, trained)
    serving_dir = str(tmp_path_factory.mktemp("serving") / "1")
    serving.export_fn(serving.ExportArgs(trained, transform_dir, serving_dir,
                                         preset.decode))
    return transform_dir, serving_dir, train[:ANALYSED]


def test_transform_learns_the_vocabulary_and_tokenises_with_it(exported):
    transform_dir, _, analysed = exported
    output = tft.TFTransformOutput(transform_dir)
    path = output.vocabulary_file_by_name(config.LEARNED_VOCABULARY_ASSET)
    assert path and path.startswith(output.transform_savedmodel_dir), path
    vocab = wordpiece.read_pieces(path)
    # Learned from the analysed transcripts, nothing else: what the library
    # learns from them, up to its tie-breaking among equally frequent pairs
    # (hash order, which changes from process to process).
    again = wordpiece.train(analysed[::-1])
    assert len(set(vocab) & set(again)) >= SAME_PIECES * len(again)
    assert _learned_from(vocab, analysed)
    layer = output.transform_features_layer()
    texts = [analysed[0], "THE HOUSE IS SMALL"]
    audio = tf.ragged.constant([ci_serving.noise(0.5, seed=i) for i in (0, 1)],
                               dtype=tf.float32).to_sparse()
    out = layer({config.AUDIO_KEY: audio,
                 config.TRANSCRIPT_KEY: tf.constant([[t] for t in texts])})
    tokens = tf.RaggedTensor.from_sparse(out[config.TOKENS_KEY]).to_list()
    for text, row in zip(texts, tokens):
        assert row == ([config.SOS_ID] + wordpiece.encode(vocab, text)
                       + [config.EOS_ID])
    assert config.TOKENS_KEY not in layer({config.AUDIO_KEY: audio})


def _until_eos(ids):
    ids = list(ids)
    return ids[:ids.index(config.EOS_ID)] if config.EOS_ID in ids else ids


def test_serving_and_tflite_decode_with_the_learned_pieces(exported):
    from models import tflite

    transform_dir, serving_dir, _ = exported
    vocab = wordpiece.read_pieces(os.path.join(
        serving_dir, config.LEARNED_VOCABULARY_ASSET))
    signature = tf.saved_model.load(serving_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]
    audio = ci_serving.noise(1.5, seed=3)
    out = signature(audio=tf.constant(audio[None]),
                    num_samples=tf.constant([len(audio)], tf.int64))
    ids = _until_eos(out[config.TOKENS_OUTPUT_KEY].numpy()[0])
    assert len(ids) >= 3  # a random model that says something
    text = out[config.TEXT_OUTPUT_KEY].numpy()[0].decode()
    assert text == wordpiece.decode(vocab, ids)
    path = os.path.join(serving_dir, config.TFLITE_FILES["float32"])
    with open(path, "rb") as f:
        lite = tflite.LiteModel(f.read())
    tflite.attach_vocabulary(lite, path)
    assert lite.vocabulary == LEARNED
    assert lite.detokenize(ids) == text
    # The character decoder would read these ids as other symbols.
    assert tokenizer.decode(ids) != text


def test_a_tflite_file_without_its_vocabulary_is_a_clear_error(
        exported, tmp_path):
    from models import tflite

    _, serving_dir, _ = exported
    for name in (config.TFLITE_FILES["float32"], serving.PRESET_ASSET):
        tf.io.gfile.copy(os.path.join(serving_dir, name), str(tmp_path / name))
    path = str(tmp_path / config.TFLITE_FILES["float32"])
    with open(path, "rb") as f:
        lite = tflite.LiteModel(f.read())
    with pytest.raises(ValueError, match=config.LEARNED_VOCABULARY_ASSET):
        tflite.attach_vocabulary(lite, path)


# --- Through the pipeline -------------------------------------------------------

@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    """`moonshine-tfx run --preset ci --vocabulary learned_wordpiece` on a
    few embedded chapters (tests/gating_runs.py's corpus), with LocalDagRunner
    and its ML Metadata store."""
    import contextlib
    import io
    import json

    import gating_runs
    from tools import cli

    data_root = gating_runs.tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    output_dir = str(tmp_path_factory.mktemp("learned_run"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["run", "--preset", "ci", "--vocabulary", LEARNED,
                       "--data-root", data_root, "--output-dir", output_dir]
                      + [f"--beam-arg={a}" for a in gating_runs.BEAM_ARGS])
    assert rc == 0, stdout.getvalue()[-3000:]
    with open(os.path.join(output_dir, "summary.json")) as f:
        return data_root, json.load(f)


@pytest.mark.slow
def test_the_pipeline_learns_the_vocabulary_and_serves_with_it(learned_run):
    from models import tflite
    from tools import metadata

    data_root, summary = learned_run
    vocabulary = summary["vocabulary"]
    assert vocabulary["name"] == LEARNED
    # Learned by this run's Transform from this run's train split only.
    store = metadata.open_store(summary["metadata_path"])
    [graph] = [a for a in store.get_artifacts_by_type("TransformGraph")
               if a.uri == vocabulary["learned_in"]]
    examples = metadata.input_of(store, graph.id, "examples")
    assert examples.uri == summary["examples_uri"]
    output = tft.TFTransformOutput(graph.uri)
    learned = wordpiece.read_pieces(output.vocabulary_file_by_name(
        config.LEARNED_VOCABULARY_ASSET))
    assert _learned_from(learned, _transcripts_under(data_root, "train"))
    assert vocabulary["size"] == len(learned)
    assert wordpiece.read_pieces(vocabulary["file"]) == learned
    # The served model's texts decode with those pieces: the test split's
    # hypotheses are words, no '##' or special piece left in them.
    for sample in summary["test"]["samples"]:
        assert "##" not in sample["hypothesis"] and "<" not in sample[
            "hypothesis"], sample
    # Its TFLite files are scored, and decode with the same pieces.
    variants = summary["tflite"]["variants"]
    assert set(variants) == {config.SAVED_MODEL_VARIANT, *config.TFLITE_FILES}
    model_dir = summary["pushed_model_dir"] or summary["exported_model_dir"]
    path = os.path.join(model_dir, config.TFLITE_FILES["float32"])
    with open(path, "rb") as f:
        lite = tflite.LiteModel(f.read())
    tflite.attach_vocabulary(lite, path)
    assert lite.vocabulary == LEARNED and lite.learned_pieces == learned


def _learned_from(vocab, transcripts) -> bool:
    """Every piece but the specials and the initial alphabet (all letters,
    seen or not) occurs in the transcripts."""
    text = " ".join(transcripts)
    merged = [p.replace(wordpiece.PREFIX, "") for p in vocab[len(SPECIAL):]]
    return all(p in text for p in merged if len(p) > 1) and any(
        len(p) > 1 for p in merged)


def _transcripts_under(data_root, prefix):
    lines = []
    for subset in sorted(os.listdir(data_root)):
        if subset.startswith(prefix):
            lines += _transcripts_at(os.path.join(data_root, subset))
    return lines


def _transcripts_at(subset_dir):
    out = []
    for path in sorted(glob.glob(os.path.join(subset_dir, "*", "*",
                                              "*.trans.txt"))):
        with open(path, encoding="utf-8") as f:
            out += [line.split(" ", 1)[1].strip() for line in f if line.strip()]
    return out
