"""preprocessing_fn under real TFT (Beam analyze-and-transform), then as a serving layer."""

import dataclasses
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import config, features, preprocessing, serving, tokenizer

RAW_SPEC = {
    config.AUDIO_KEY: tf.io.VarLenFeature(tf.float32),
    config.TRANSCRIPT_KEY: tf.io.FixedLenFeature([1], tf.string),
    config.UTTERANCE_ID_KEY: tf.io.FixedLenFeature([1], tf.string),
    config.DURATION_KEY: tf.io.FixedLenFeature([1], tf.float32),
}


def _examples(n=2 * config.LOG_MEL_STATS_EVERY, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        samples = int(config.SAMPLE_RATE * (0.5 + 0.25 * i))
        t = np.arange(samples) / config.SAMPLE_RATE
        audio = (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
                 + 0.05 * rng.standard_normal(samples)).astype(np.float32)
        out.append({config.AUDIO_KEY: audio,
                    config.TRANSCRIPT_KEY: [f"HELLO WORLD {i}".encode()],
                    config.UTTERANCE_ID_KEY: [f"1-2-{i:04d}".encode()],
                    config.DURATION_KEY: [samples / config.SAMPLE_RATE]})
    return out


@pytest.fixture(scope="module")
def transformed():
    raw = _examples()
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(RAW_SPEC))
    out_dir = tempfile.mkdtemp()
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (data, _), transform_fn = (
            (raw, metadata)
            | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    return raw, data, tft.TFTransformOutput(out_dir)


def _log_mel(raw_example):
    audio = raw_example[config.AUDIO_KEY][None, :]
    mel, frames = features.log_mel_spectrogram(
        tf.constant(audio), tf.constant([audio.shape[1]], tf.int64))
    return mel.numpy()[0, :int(frames[0])]


def test_log_mel_is_normalised_with_training_statistics(transformed):
    """With the statistics of the analysed utterances alone (numbers 0 and
    LOG_MEL_STATS_EVERY of the chapter), applied to every utterance."""
    raw, data, _ = transformed
    analysed = [r for r in raw if int(r[config.UTTERANCE_ID_KEY][0].split(
        b"-")[-1]) % config.LOG_MEL_STATS_EVERY == 0]
    assert 0 < len(analysed) < len(raw)
    unnormalised = np.concatenate([_log_mel(r) for r in analysed])
    mean, std = unnormalised.mean(0), np.sqrt(unnormalised.var(0) + 1e-5)
    everything = np.concatenate([_log_mel(r) for r in raw])
    assert np.abs(everything.mean(0) - mean).max() > 0.01  # they differ
    for r, d in zip(raw, data):
        expected = (_log_mel(r) - mean) / std
        got = np.asarray(d[config.LOG_MEL_KEY]).reshape(-1, config.N_MELS)
        assert int(d[config.NUM_FRAMES_KEY]) == expected.shape[0]
        np.testing.assert_allclose(got, expected, atol=2e-3)
    stacked = np.concatenate([np.asarray(d[config.LOG_MEL_KEY]).reshape(
        -1, config.N_MELS) for d, r in zip(data, raw) if any(
            r is a for a in analysed)])
    np.testing.assert_allclose(stacked.mean(0), 0.0, atol=1e-3)


def test_stats_rows_are_every_nth_utterance_of_a_chapter():
    ids = tf.constant([b"19-198-0000", b"19-198-0003", b"19-198-0004",
                       b"103-1240-0012", b"7-8-9", b"", b"odd-id"])
    every = config.LOG_MEL_STATS_EVERY
    expected = [True, 3 % every == 0, 4 % every == 0, 12 % every == 0,
                9 % every == 0, True, True]
    assert preprocessing.stats_rows(ids).numpy().tolist() == expected


def test_transcripts_become_character_ids(transformed):
    raw, data, _ = transformed
    for r, d in zip(raw, data):
        text = r[config.TRANSCRIPT_KEY][0].decode()
        ids = list(np.asarray(d[config.TOKENS_KEY]))
        assert ids[0] == config.SOS_ID and ids[-1] == config.EOS_ID
        assert tokenizer.decode(ids) == "".join(
            c for c in text if c in config.CHARACTERS)
        assert int(d[config.NUM_TOKENS_KEY]) == len(ids)


def test_serving_layer_needs_audio_only_and_matches_beam(transformed):
    raw, data, tft_output = transformed
    layer = tft_output.transform_features_layer()
    audio = tf.ragged.constant([r[config.AUDIO_KEY] for r in raw[:2]],
                               dtype=tf.float32).to_sparse()
    out = layer({config.AUDIO_KEY: audio})
    flat = tf.RaggedTensor.from_sparse(out[config.LOG_MEL_KEY])
    for i in range(2):
        np.testing.assert_allclose(flat[i].numpy(),
                                   np.asarray(data[i][config.LOG_MEL_KEY]),
                                   atol=1e-5)


def test_bpe_tokens_come_from_the_raw_ids_with_sos_and_eos():
    bpe_ids = tf.ragged.constant([[22172, 3186], [372]], dtype=tf.int64)
    inputs = {config.MOONSHINE_BPE_IDS_KEY: bpe_ids.to_sparse()}
    tokens = preprocessing.transcript_tokens(
        inputs, tf.constant([b"HELLO WORLD", b"IT"]),
        config.MOONSHINE_BPE_VOCABULARY)
    assert tokens.to_list() == [
        [config.SOS_ID, 22172, 3186, config.EOS_ID],
        [config.SOS_ID, 372, config.EOS_ID]]


def test_bpe_without_ingested_ids_is_a_clear_error():
    transcripts = tf.constant([b"HELLO", b"WORLD"])
    with pytest.raises(ValueError, match=config.MOONSHINE_BPE_IDS_KEY):
        preprocessing.transcript_tokens({}, transcripts,
                                        config.MOONSHINE_BPE_VOCABULARY)
    # The feature is in the schema but this example was ingested for the
    # character vocabulary: no ids.
    missing = tf.ragged.constant([[22172], []], dtype=tf.int64).to_sparse()
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="LibriSpeechExampleGen"):
        preprocessing.transcript_tokens(
            {config.MOONSHINE_BPE_IDS_KEY: missing}, transcripts,
            config.MOONSHINE_BPE_VOCABULARY)


def test_transform_options_name_only_what_differs_from_the_defaults():
    ci = config.get_preset("ci").model
    assert preprocessing.transform_options(ci) == {}
    assert preprocessing.transform_options(
        ci.with_vocabulary(config.MOONSHINE_BPE_VOCABULARY)) == {
        "vocabulary": config.MOONSHINE_BPE_VOCABULARY}
    assert preprocessing.transform_options(dataclasses.replace(
        ci, frontend=config.WAVEFORM_FRONTEND, n_mels=64)) == {
        "frontend": config.WAVEFORM_FRONTEND, "n_mels": 64}
    with pytest.raises(ValueError, match="unknown Transform custom_config"):
        preprocessing.preprocessing_fn({}, {"preset": "demo"})


# --- Through the pipeline's own ExampleGen and Transform -----------------------
@pytest.fixture(scope="module")
def ci_steps(tmp_path_factory):
    import pipeline_steps
    tmp = str(tmp_path_factory.mktemp("ci_steps"))
    return pipeline_steps.ingest_and_transform(tmp, config.get_preset("ci"))


@pytest.mark.slow
def test_the_trainer_sees_the_log_mel_of_the_source_audio(ci_steps):
    """The log-mel the Trainer computes from the PCM-coded raw examples
    equals, within float tolerance, the log-mel of each source FLAC's float
    samples through the same Transform graph (the serving signatures'
    path); and Transform counted every training input length."""
    import glob as globlib

    import pipeline_steps
    import soundfile as sf
    from models import data

    preset = config.get_preset("ci")
    tft_output = tft.TFTransformOutput(ci_steps.transform_graph.uri)
    layer = tft_output.transform_features_layer()
    train_frames = []
    for split in config.SPLITS:
        view = pipeline_steps.trainer_view(ci_steps, preset, split)
        assert view, split
        for uid, (features, frames, tokens) in view.items():
            (flac,) = globlib.glob(os.path.join(
                ci_steps.data_root, "*", "*", "*", uid + ".flac"))
            samples, _ = sf.read(flac, dtype="float32")
            out = layer(serving.raw_audio_features(
                tf.constant(samples[None]),
                tf.constant([len(samples)], tf.int64),
                tft_output.raw_feature_spec()))
            expected = tf.sparse.to_dense(out[config.LOG_MEL_KEY]).numpy()
            assert features.shape == (frames, preset.model.n_mels)
            np.testing.assert_allclose(features.ravel(), expected.ravel(),
                                       atol=1e-5)
            assert tokens[0] == config.SOS_ID and tokens[-1] == config.EOS_ID
            if split == "train":
                train_frames.append(frames)
    assert data.length_counts(tft_output) == {
        n: train_frames.count(n) for n in set(train_frames)}
