"""LibriSpeechExampleGen end to end: the real executor over a faulty corpus.

The fast tests run the executor's `Do` once (module fixture) with the
component's own exec properties and real Examples artifacts, then read back
the gzipped TFRecords, the quarantine files and the ingestion report. The slow
test runs the component in a LocalDagRunner pipeline with a SQLite ML Metadata
store, next to StatisticsGen, ImportSchemaGen (schemas/schema.pbtxt) and
ExampleValidator, and expects no anomalies.
"""

import collections
import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from components.librispeech_example_gen import component
from components.librispeech_example_gen import executor
from components.librispeech_example_gen import layout
from models import config, pcm
from test_librispeech_layout import (FAULTY_SPLIT_MAX_SECONDS,
                                     FAULTY_SPLIT_REASONS,
                                     FAULTY_SPLIT_WRITTEN, write_chapter,
                                     write_faulty_split)

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "schemas", "schema.pbtxt")

# Per split: (written utterance ids, quarantined by reason, resampled,
# downmixed, audio seconds).
EXPECTED = {
    "train": (FAULTY_SPLIT_WRITTEN, FAULTY_SPLIT_REASONS, 0, 0, 1.5),
    "eval": (("5-6-0001", "5-6-0002"), {}, 2, 2, 1.0),
    "test": (("7-8-0001",), {layout.MISSING_TRANSCRIPT: 1}, 1, 0, 0.5),
}


def write_corpus(root: str) -> None:
    """train*: every fault; dev*: 44.1 kHz stereo; test*: 8 kHz + a fault."""
    write_faulty_split(root, "train")
    write_chapter(os.path.join(root, "dev-clean"), 5, 6,
                  {1: "dev one", 2: "DEV TWO"}, rate=44_100, channels=2)
    write_chapter(os.path.join(root, "test-clean"), 7, 8, {1: "TEST ONE"},
                  audio={1: 0.5, 2: 0.5}, rate=8_000)
    # Not a subset of any split: never read.
    write_chapter(os.path.join(root, "other"), 9, 9, {1: "IGNORED"})


def load_schema() -> schema_pb2.Schema:
    with open(SCHEMA_PATH) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def read_split(examples_uri: str, split: str):
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}",
                                          "*.gz")))
    assert files, split
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP")
                   .as_numpy_iterator())
    feature_spec = schema_utils.schema_as_feature_spec(
        load_schema()).feature_spec
    parsed = tf.io.parse_example(records, feature_spec) if records else {}
    return records, parsed


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("librispeech"))
    write_corpus(root)
    gen = component.LibriSpeechExampleGen(
        input_base=root, max_audio_seconds=FAULTY_SPLIT_MAX_SECONDS)
    exec_properties = {k: v for k, v in gen.exec_properties.items()
                       if v is not None}
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path_factory.mktemp("examples"))
    executor.Executor().Do({}, {"examples": [examples]}, exec_properties)
    return root, examples


def test_component_defaults():
    splits = {s.name: s.pattern
              for s in component.default_input_config().splits}
    assert splits == {split: prefix + "*" for prefix, split
                      in config.SUBSET_PREFIX_TO_SPLIT.items()}
    custom = component.default_input_config(
        {"train": "train-clean-100*", "eval": "dev-other*"})
    assert [(s.name, s.pattern) for s in custom.splits] == [
        ("train", "train-clean-100*"), ("eval", "dev-other*")]
    gen = component.LibriSpeechExampleGen(input_base="/data")
    assert executor.audio_limits(gen.exec_properties) == (
        config.MIN_AUDIO_SECONDS, config.MAX_AUDIO_SECONDS)
    gen = component.LibriSpeechExampleGen(
        input_base="/data", custom_config={"max_audio_seconds": 20})
    assert executor.audio_limits(gen.exec_properties) == (
        config.MIN_AUDIO_SECONDS, 20.0)
    assert isinstance(gen.executor_spec.executor_class, type)
    assert gen.executor_spec.executor_class is executor.Executor
    with pytest.raises(ValueError, match="max_audio_secs"):
        component.LibriSpeechExampleGen(
            input_base="/data", custom_config={"max_audio_secs": 20})


def test_component_vocabulary_option():
    gen = component.LibriSpeechExampleGen(
        input_base="/data", custom_config={"max_audio_seconds": 20},
        vocabulary=config.MOONSHINE_BPE_VOCABULARY)
    assert executor.vocabulary(gen.exec_properties) == (
        config.MOONSHINE_BPE_VOCABULARY)
    assert executor.audio_limits(gen.exec_properties)[1] == 20.0
    # The vocabularies Transform tokenises (the default characters, the
    # learned pieces) leave the exec properties (so the cache key) as they
    # were.
    plain = component.LibriSpeechExampleGen(input_base="/data")
    for vocabulary in (config.CHARACTER_VOCABULARY,
                       config.LEARNED_VOCABULARY):
        gen = component.LibriSpeechExampleGen(input_base="/data",
                                              vocabulary=vocabulary)
        assert gen.exec_properties == plain.exec_properties, vocabulary
        assert executor.vocabulary(gen.exec_properties) == (
            config.CHARACTER_VOCABULARY)
    with pytest.raises(ValueError, match="unknown vocabulary 'bpe'"):
        component.LibriSpeechExampleGen(input_base="/data", vocabulary="bpe")


def test_report_counts_every_item(ingested):
    _, examples = ingested
    with open(os.path.join(examples.uri, executor.REPORT_FILE)) as f:
        report = json.load(f)
    assert sorted(report["splits"]) == ["eval", "test", "train"]
    for split, (ids, reasons, resampled, downmixed, seconds) in (
            EXPECTED.items()):
        summary = report["splits"][split]
        assert summary["written"] == len(ids), split
        assert summary["quarantined_by_reason"] == reasons, split
        assert summary["quarantined"] == sum(reasons.values()), split
        assert summary["found"] == summary["written"] + summary["quarantined"]
        assert (summary["resampled"], summary["downmixed"]) == (
            resampled, downmixed), split
        # Resampled or down-mixed audio is no longer exact 16-bit audio.
        assert summary["requantized"] == max(resampled, downmixed), split
        assert summary["audio_seconds"] == pytest.approx(seconds, abs=1e-3)
    assert report["splits"]["train"]["found"] == 25
    assert report["total"]["found"] == 25 + 2 + 2
    assert report["total"]["written"] == 3 + 2 + 1
    # Lineage: the same report on the artifact.
    assert examples.get_json_value_custom_property(
        executor.REPORT_PROPERTY) == report
    assert examples.get_int_custom_property("ingestion_quarantined") == 23
    assert examples.split_names == '["train", "eval", "test"]'


def test_audio_16_bits_cannot_hold_is_rounded_counted_and_named(
        tmp_path, caplog):
    """A 24-bit FLAC is written rounded to 16 bits, counted as requantized
    and named in the log; a 16-bit one is written exactly."""
    import logging
    root = str(tmp_path / "corpus")
    write_chapter(os.path.join(root, "train-clean"), 1, 2, {1: "ONE"},
                  subtype="PCM_24", noise=True)
    write_chapter(os.path.join(root, "train-clean"), 3, 4, {1: "TWO"},
                  noise=True)
    gen = component.LibriSpeechExampleGen(
        input_base=root, input_config=component.default_input_config(
            {"train": "train*"}))
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    with caplog.at_level(logging.WARNING):
        executor.Executor().Do({}, {"examples": [examples]}, {
            k: v for k, v in gen.exec_properties.items() if v is not None})
    with open(os.path.join(examples.uri, executor.REPORT_FILE)) as f:
        summary = json.load(f)["splits"]["train"]
    assert (summary["written"], summary["requantized"]) == (2, 1)
    named = [r.getMessage() for r in caplog.records
             if "rounded to 16 bits" in r.getMessage()]
    assert len(named) == 1 and "1-2-0001.flac" in named[0] and (
        "PCM_24" in named[0])
    records, _ = read_split(examples.uri, "train")
    for record in records:
        feature = tf.train.Example.FromString(record).features.feature
        uid = feature[config.UTTERANCE_ID_KEY].bytes_list.value[0].decode()
        encoded = list(feature[config.AUDIO_PCM_KEY].bytes_list.value)
        path = glob.glob(os.path.join(root, "*", "*", "*", uid + ".flac"))[0]
        source = layout.load_audio(path).samples
        written = pcm.decode(encoded).astype(np.float32) / pcm.PCM_SCALE
        if uid == "3-4-0001":
            np.testing.assert_array_equal(written, source)
        else:  # within half a 16-bit step
            assert np.abs(written - source).max() <= 0.5 / pcm.PCM_SCALE


def test_quarantine_files_lose_nothing(ingested):
    _, examples = ingested
    for split, (_, reasons, *_rest) in EXPECTED.items():
        path = os.path.join(examples.uri, "quarantine", f"{split}.jsonl")
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        assert collections.Counter(r["reason"] for r in records) == reasons
        for r in records:
            assert r["split"] == split
            assert r["message"].startswith(r["path"])
            # The path is the file, or `<transcript>:<line>` for a line.
            assert os.path.lexists(re.sub(r":\d+$", "", r["path"])), r
    # Only Split-* folders are examples; the quarantine sits beside them.
    assert sorted(d for d in os.listdir(examples.uri)
                  if d.startswith("Split-")) == [
        "Split-eval", "Split-test", "Split-train"]


def test_examples_parse_with_curated_schema(ingested):
    root, examples = ingested
    for split, (ids, *_rest) in EXPECTED.items():
        records, parsed = read_split(examples.uri, split)
        assert len(records) == len(ids)
        got_ids = [u.decode() for u in
                   parsed[config.UTTERANCE_ID_KEY].numpy().ravel()]
        assert sorted(got_ids) == sorted(ids)
        for i, uid in enumerate(got_ids):
            example = tf.train.Example.FromString(records[i])
            feature = example.features.feature
            encoded = list(feature[config.AUDIO_PCM_KEY].bytes_list.value)
            audio = pcm.decode(encoded).astype(np.float32) / pcm.PCM_SCALE
            assert config.AUDIO_KEY not in feature  # bytes, not floats
            speaker, chapter, _ = layout.parse_utterance_id(uid)
            # The first subset holding the id wins a duplicate.
            source = layout.load_audio(sorted(glob.glob(os.path.join(
                root, "*", str(speaker), str(chapter), uid + ".flac")))[0])
            # 16-bit sources exactly; resampled or down-mixed audio rounded
            # to 16 bits (counted as requantized, below).
            expected = pcm.to_pcm16(source.samples)[0] / pcm.PCM_SCALE
            np.testing.assert_array_equal(audio, expected.astype(np.float32))
            assert feature[config.DURATION_KEY].float_list.value[0] == (
                pytest.approx(len(audio) / config.SAMPLE_RATE))
            assert feature[config.DURATION_BUCKET_KEY].bytes_list.value[
                0].decode() == config.duration_bucket(
                    len(audio) / config.SAMPLE_RATE)
            assert feature[config.SPEAKER_ID_KEY].int64_list.value[0] == (
                speaker)
            assert feature[config.CHAPTER_ID_KEY].int64_list.value[0] == (
                chapter)
            transcript = feature[config.TRANSCRIPT_KEY].bytes_list.value[0]
            assert set(transcript.decode()) <= set(config.CHARACTERS)
        assert parsed[config.AUDIO_PCM_KEY].dense_shape[0] == len(ids)
    _, parsed = read_split(examples.uri, "eval")
    assert sorted(parsed[config.TRANSCRIPT_KEY].numpy().ravel()) == [
        b"DEV ONE", b"DEV TWO"]


def test_curated_schema_matches_config():
    schema = load_schema()
    features = {f.name: f for f in schema.feature}
    assert set(features) == {
        config.AUDIO_PCM_KEY, config.AUDIO_KEY, config.TRANSCRIPT_KEY,
        config.UTTERANCE_ID_KEY, config.SUBSET_KEY, config.SPEAKER_ID_KEY,
        config.CHAPTER_ID_KEY, config.DURATION_KEY,
        config.DURATION_BUCKET_KEY, config.MOONSHINE_BPE_IDS_KEY}
    varlen = (config.AUDIO_PCM_KEY, config.MOONSHINE_BPE_IDS_KEY)
    bucket = features[config.DURATION_BUCKET_KEY]
    assert bucket.type == schema_pb2.BYTES
    (domain,) = [d for d in schema.string_domain if d.name == bucket.domain]
    assert tuple(domain.value) == config.DURATION_BUCKETS
    # The ExampleGen's audio: two opaque bytes values (models/pcm.py), so
    # that TFDV computes their length statistics and no top-k over them.
    audio = features[config.AUDIO_PCM_KEY]
    assert audio.type == schema_pb2.BYTES and audio.HasField("image_domain")
    assert (audio.value_count.min, audio.value_count.max) == (2, 2)
    assert list(audio.not_in_environment) == ["SERVING"]
    # Float audio: what serving may pass instead; never written.
    floats = features.pop(config.AUDIO_KEY)
    assert floats.type == schema_pb2.FLOAT and not floats.HasField("shape")
    assert floats.value_count.min == 1 and not floats.HasField("presence")
    assert features[config.DURATION_KEY].float_domain.max == (
        config.MAX_AUDIO_SECONDS)
    # Written only for the BPE vocabulary: optional, at least one id when
    # present, each an id of that vocabulary.
    bpe_ids = features.pop(config.MOONSHINE_BPE_IDS_KEY)
    assert not bpe_ids.HasField("presence") and not bpe_ids.HasField("shape")
    assert bpe_ids.type == schema_pb2.INT and bpe_ids.value_count.min == 1
    assert (bpe_ids.int_domain.min, bpe_ids.int_domain.max) == (
        0, config.MOONSHINE_BPE_VOCAB_SIZE - 1)
    assert list(bpe_ids.not_in_environment) == ["SERVING"]
    assert all(f.presence.min_fraction == 1.0 for f in features.values())
    for name, f in features.items():
        if name not in varlen:
            assert [d.size for d in f.shape.dim] == [1], name


@pytest.mark.parametrize("seconds, bucket", [
    (0.0, "<2s"), (1.999, "<2s"), (2.0, "2-5s"), (4.99, "2-5s"),
    (5.0, "5-10s"), (9.99, "5-10s"), (10.0, ">=10s"), (35.0, ">=10s")])
def test_duration_buckets(seconds, bucket):
    assert config.duration_bucket(seconds) == bucket
    assert config.DURATION_BUCKETS.index(bucket) == sum(
        seconds >= edge for edge in config.DURATION_BUCKET_EDGES_SECONDS)


def test_fingerprint_sees_files_inside_subsets(tmp_path):
    root = str(tmp_path)
    chapter = write_chapter(os.path.join(root, "train-x"), 1, 2, {1: "A"})

    def fingerprint():
        processor = component.LibriSpeechDriver(None).get_input_processor(
            component.default_input_config({"train": "train*"}).splits,
            input_base_uri=root)
        span, version = processor.resolve_span_and_version()
        return processor.get_input_fingerprint(span, version)

    before = fingerprint()
    with open(os.path.join(chapter, "1-2-0001.flac"), "ab") as f:
        f.write(b"\0" * 10)
    assert fingerprint() != before


def test_one_input_split_hash_partitioned_by_speaker(tmp_path):
    root = str(tmp_path / "data")
    for speaker in range(1, 7):
        write_chapter(os.path.join(root, "train-x"), speaker, 10,
                      {1: "A", 2: "B"}, audio={1: 0.1, 2: 0.1, 3: 0.1})
    gen = component.LibriSpeechExampleGen(
        input_base=root,
        input_config=component.default_input_config({"all": "train*"}),
        output_config=example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[example_gen_pb2.SplitConfig.Split(
                            name="train", hash_buckets=2),
                        example_gen_pb2.SplitConfig.Split(
                            name="eval", hash_buckets=1)],
                partition_feature_name=config.SPEAKER_ID_KEY)))
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "out")
    executor.Executor().Do(
        {}, {"examples": [examples]},
        {k: v for k, v in gen.exec_properties.items() if v is not None})

    speakers = {}
    for split in ("train", "eval"):
        _, parsed = read_split(examples.uri, split)
        speakers[split] = set(
            parsed[config.SPEAKER_ID_KEY].numpy().ravel().tolist())
    assert not speakers["train"] & speakers["eval"]
    assert speakers["train"] | speakers["eval"] == set(range(1, 7))
    report = examples.get_json_value_custom_property(executor.REPORT_PROPERTY)
    assert list(report["splits"]) == ["all"]  # keyed by the input split
    assert report["splits"]["all"]["written"] == 12
    assert report["splits"]["all"]["quarantined_by_reason"] == {
        layout.MISSING_TRANSCRIPT: 6}


def test_no_matching_subset_is_a_clear_error(tmp_path):
    write_chapter(str(tmp_path / "train-x"), 1, 2, {1: "A"})
    gen = component.LibriSpeechExampleGen(input_base=str(tmp_path))
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"dev\*"):
        executor.Executor().Do(
            {}, {"examples": [examples]},
            {k: v for k, v in gen.exec_properties.items() if v is not None})


@pytest.mark.slow
def test_local_dag_runner_pipeline_validates(tmp_path):
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    from tfx.orchestration import metadata  # pylint: disable=import-outside-toplevel

    root = str(tmp_path / "LibriSpeech")
    write_corpus(root)
    example_gen = component.LibriSpeechExampleGen(
        input_base=root, max_audio_seconds=FAULTY_SPLIT_MAX_SECONDS)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=SCHEMA_PATH)
    validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"])
    db = str(tmp_path / "mlmd.sqlite")
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="librispeech-example-gen-test",
        pipeline_root=str(tmp_path / "root"),
        components=[example_gen, statistics_gen, schema_gen, validator],
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(db)),
        enable_cache=False))

    with metadata.Metadata(
            metadata.sqlite_metadata_connection_config(db)) as m:
        [examples] = m.store.get_artifacts_by_type("Examples")
        [anomalies] = m.store.get_artifacts_by_type("ExampleAnomalies")
        [statistics] = m.store.get_artifacts_by_type("ExampleStatistics")
    assert examples.custom_properties["ingestion_written"].int_value == 6
    # LibriSpeechDriver ran: the fingerprint covers the files in the subsets.
    assert "tree:train,num_files:" in examples.custom_properties[
        "input_fingerprint"].string_value
    assert examples.custom_properties["ingestion_quarantined"].int_value == 23
    with open(os.path.join(examples.uri, executor.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["splits"]["train"]["quarantined_by_reason"] == (
        FAULTY_SPLIT_REASONS)
    for split in EXPECTED:
        path = os.path.join(anomalies.uri, f"Split-{split}", "SchemaDiff.pb")
        with open(path, "rb") as f:
            result = anomalies_pb2.Anomalies.FromString(f.read())
        assert not result.anomaly_info, (split, result)
        assert not result.HasField("dataset_anomaly_info"), (split, result)
    # The check is not vacuous: a tighter duration domain is an anomaly.
    import tensorflow_data_validation as tfdv  # pylint: disable=import-outside-toplevel
    stats = tfdv.load_stats_binary(os.path.join(
        statistics.uri, "Split-train", "FeatureStats.pb"))
    tight = load_schema()
    next(f for f in tight.feature
         if f.name == config.DURATION_KEY).float_domain.max = 0.1
    assert config.DURATION_KEY in tfdv.validate_statistics(
        stats, tight).anomaly_info
