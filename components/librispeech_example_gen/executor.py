"""Executor of the LibriSpeech ExampleGen.

Each input split's pattern is a glob of LibriSpeech subset directories under
`input_base` (e.g. `train*`). Per split the Beam pipeline

    Create(subset dirs) -> list chapter dirs -> Reshuffle -> scan chapters
      -> GroupByKey(utterance id) (duplicate ids across subsets)
      -> Reshuffle (the utterances, in random order) -> decode audio (DoFn,
      scales over workers) -> tf.train.Example -> WriteToTFRecord

Only file names and transcripts are ever shuffled: the audio is decoded,
encoded (16-bit PCM, models/pcm.py) and written in one fused step, so no
runner holds the corpus's audio in memory, whatever its size; the random
order of the utterances before decoding is the order on disk (TFX's own
ExampleGen shuffles the encoded examples instead, through memory).

and every bad item goes to a tagged side output: it is counted with Beam
metrics (namespace `librispeech_example_gen`, one counter per reason), written
to `<examples uri>/quarantine/<split>.jsonl` (one JSON object per line: split,
subset, path, reason, message, utterance_id), and summarised in
`<examples uri>/quarantine/<split>.summary.json`. After the pipeline, `Do`
merges the summaries into `<examples uri>/ingestion_report.json` and onto the
output artifact (JSON custom property `ingestion_report`, and int custom
properties `ingestion_found`, `ingestion_written`, `ingestion_quarantined`
over all splits), and checks `found == written + quarantined` for every split.

Report format: {"splits": {split: {found, written, quarantined,
quarantined_by_reason: {reason: n}, resampled, downmixed, requantized,
audio_seconds}}, where requantized counts the utterances whose audio 16 bits
could not hold exactly (24-bit or float sources, resampled or down-mixed
audio), each also named in the log;
"total": {same keys over all splits}, "quarantine_files": {split:
"quarantine/<split>.jsonl" (relative to the examples uri)}}. Splits are the
input splits (with a hash-partitioned output_config, the one input split).

Configuration (FileBasedExampleGen's `custom_config`, a google.protobuf.Struct
packed in example_gen_pb2.CustomConfig; see component.py):
  max_audio_seconds (default config.MAX_AUDIO_SECONDS),
  min_audio_seconds (default config.MIN_AUDIO_SECONDS),
  vocabulary (default config.CHARACTER_VOCABULARY): with
    config.MOONSHINE_BPE_VOCABULARY every example also gets the transcript's
    BPE ids (models/bpe.py) as the int64 feature config.MOONSHINE_BPE_IDS_KEY,
    since BPE merges cannot run in Transform's graph; the character
    vocabulary needs nothing extra (Transform tokenises it).
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
import zlib
from typing import (Any, Dict, Iterable, Iterator, List, Optional, Tuple,
                    Union)

from absl import logging
import apache_beam as beam
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io import tfrecordio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import struct_pb2
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import (
    BaseExampleGenExecutor)
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.components.util import examples_utils
from tfx.utils import proto_utils

from components.librispeech_example_gen import layout
from models import bpe
from models import config
from models import pcm

METRICS_NAMESPACE = "librispeech_example_gen"

MAX_AUDIO_SECONDS_KEY = "max_audio_seconds"
MIN_AUDIO_SECONDS_KEY = "min_audio_seconds"
VOCABULARY_KEY = "vocabulary"
CUSTOM_CONFIG_KEYS = (MAX_AUDIO_SECONDS_KEY, MIN_AUDIO_SECONDS_KEY,
                      VOCABULARY_KEY)

QUARANTINE_DIR = "quarantine"  # not Split-*: downstream components ignore it
REPORT_FILE = layout.INGESTION_REPORT_FILE
REPORT_PROPERTY = layout.INGESTION_REPORT_PROPERTY
QUARANTINE_SUFFIX = ".jsonl"
SUMMARY_SUFFIX = ".summary.json"

# Private exec properties set by Do: where the side files go, and how many
# Beam workers share the decoding (for the progress lines).
_OUTPUT_URI_KEY = "_librispeech_examples_uri"
_WORKERS_KEY = "_librispeech_beam_workers"

_QUARANTINE_TAG = "quarantine"
_WRITTEN_TAG = "written"


# --- Configuration ---------------------------------------------------------------
def custom_config_to_dict(value: Union[None, str, dict,
                                       example_gen_pb2.CustomConfig]
                          ) -> Dict[str, Any]:
    """The exec property `custom_config` (JSON of CustomConfig) as a dict."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        proto = example_gen_pb2.CustomConfig()
        proto_utils.json_to_proto(value, proto)
    else:
        proto = value
    if not proto.HasField("custom_config"):
        return {}
    struct = struct_pb2.Struct()
    if not proto.custom_config.Unpack(struct):
        raise ValueError(
            "LibriSpeechExampleGen custom_config must pack a "
            f"google.protobuf.Struct, got {proto.custom_config.type_url!r}")
    return json_format.MessageToDict(struct)


def _custom_config(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    custom = custom_config_to_dict(
        exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY))
    unknown = sorted(set(custom) - set(CUSTOM_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown LibriSpeechExampleGen custom_config keys {unknown}; "
            f"known: {list(CUSTOM_CONFIG_KEYS)}")
    return custom


def vocabulary(exec_properties: Dict[str, Any]) -> str:
    """The vocabulary whose ids the examples carry (custom_config)."""
    name = _custom_config(exec_properties).get(VOCABULARY_KEY,
                                               config.CHARACTER_VOCABULARY)
    if name not in config.VOCABULARY_SIZES:
        raise ValueError(
            f"LibriSpeechExampleGen custom_config {VOCABULARY_KEY} {name!r} "
            f"is none of {sorted(config.VOCABULARY_SIZES)}")
    return name


def audio_limits(exec_properties: Dict[str, Any]) -> Tuple[float, float]:
    """(min_seconds, max_seconds) from the exec properties' custom_config."""
    custom = _custom_config(exec_properties)
    max_s = float(custom.get(MAX_AUDIO_SECONDS_KEY, config.MAX_AUDIO_SECONDS))
    min_s = float(custom.get(MIN_AUDIO_SECONDS_KEY, config.MIN_AUDIO_SECONDS))
    if not 0 <= min_s < max_s:
        raise ValueError(
            f"need 0 <= {MIN_AUDIO_SECONDS_KEY} < {MAX_AUDIO_SECONDS_KEY}, got "
            f"{min_s} and {max_s}")
    return min_s, max_s


def _input_config(exec_properties: Dict[str, Any]) -> example_gen_pb2.Input:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
        input_config)
    return input_config


def _split_name_for_pattern(exec_properties: Dict[str, Any],
                            split_pattern: str) -> str:
    names = [s.name for s in _input_config(exec_properties).splits
             if s.pattern == split_pattern]
    if len(names) != 1:
        raise ValueError(
            f"split pattern {split_pattern!r} must belong to exactly one input "
            f"split, found {names}")
    return names[0]


# --- Examples -----------------------------------------------------------------------
def make_example(utterance: layout.Utterance, audio: layout.Audio,
                 pcm16, bpe_ids: Optional[List[int]] = None
                 ) -> tf.train.Example:
    """The raw example: 16 kHz mono 16-bit audio (int16 `pcm16`, encoded by
    models/pcm.py) and its labels, plus the transcript's BPE ids when
    given."""
    def _bytes(s: str) -> tf.train.Feature:
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[s.encode("utf-8")]))

    def _int(i: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))

    feature = {
        config.AUDIO_PCM_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=pcm.encode(pcm16))),
        config.TRANSCRIPT_KEY: _bytes(utterance.transcript),
        config.UTTERANCE_ID_KEY: _bytes(utterance.utterance_id),
        config.SUBSET_KEY: _bytes(utterance.subset),
        config.SPEAKER_ID_KEY: _int(utterance.speaker_id),
        config.CHAPTER_ID_KEY: _int(utterance.chapter_id),
        config.DURATION_KEY: tf.train.Feature(
            float_list=tf.train.FloatList(value=[audio.duration])),
        # Categorical, so the Evaluator can slice by it (TFMA slices on values).
        config.DURATION_BUCKET_KEY: _bytes(
            config.duration_bucket(audio.duration)),
    }
    if bpe_ids is not None:
        feature[config.MOONSHINE_BPE_IDS_KEY] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=bpe_ids))
    return tf.train.Example(features=tf.train.Features(feature=feature))


# --- Writing --------------------------------------------------------------------------
# GZIP level of the examples. Beam's TFRecord writer uses zlib's default, 6,
# which on the PCM planes costs more than decoding the FLACs; level 1 writes
# twice as fast for 4 % more bytes (BENCHMARKS.md, "Data steps at scale").
GZIP_LEVEL = 1


class _GzipFile:
    """A file handle that GZIP-compresses what is written to it."""

    def __init__(self, raw):
        self._raw = raw
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED,
                                      zlib.MAX_WBITS | 16)  # gzip framing

    def write(self, data: bytes) -> None:
        compressed = self._zlib.compress(data)
        if compressed:
            self._raw.write(compressed)

    def close(self) -> None:
        self._raw.write(self._zlib.flush())
        self._raw.close()


class _TFRecordGzipSink(filebasedsink.FileBasedSink):
    """Beam's TFRecord sink (one shard per bundle, written to temporary
    files and renamed when the write commits) at GZIP_LEVEL."""

    def __init__(self, file_path_prefix: str):
        super().__init__(file_path_prefix, coder=coders.BytesCoder(),
                         file_name_suffix=".gz",
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def open(self, temp_path):
        return _GzipFile(super().open(temp_path))

    def write_encoded_record(self, file_handle, value):
        # Beam's own TFRecord framing (length, masked CRC32C, data, CRC).
        tfrecordio._TFRecordUtil.write_record(  # pylint: disable=protected-access
            file_handle, value)


# --- Beam pieces ---------------------------------------------------------------------
def _scan(entry: Union[str, layout.Quarantined]
          ) -> Iterator[Union[layout.Utterance, layout.Quarantined]]:
    if isinstance(entry, layout.Quarantined):
        yield entry
    else:
        yield from layout.scan_chapter(entry)


class _ScanPartition(beam.DoFn):
    """Routes scanned items: utterances keyed by id, quarantined tagged."""

    def __init__(self):
        self._found = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "found")

    def process(self, item):
        self._found.inc()
        if isinstance(item, layout.Quarantined):
            yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, item)
        else:
            yield item.utterance_id, item


def _dedupe(keyed: Tuple[str, Iterable[layout.Utterance]]):
    _, candidates = keyed
    keep, duplicates = layout.resolve_duplicates(candidates)
    yield keep
    for q in duplicates:
        yield beam.pvalue.TaggedOutput(_QUARANTINE_TAG, q)


class _Progress:
    """Progress lines of one worker's share of a split's decoding (at most
    one per config.PROGRESS_SECONDS): utterances and audio-hours done, the
    rate, and the time left if every worker has an equal share."""

    def __init__(self, split: str, workers: int):
        self._split, self._workers = split, max(1, workers)
        self._started = self._last = None
        self._done, self._seconds = 0, 0.0

    def update(self, seconds: float, total: int) -> None:
        now = time.time()
        if self._started is None:
            self._started = self._last = now
        self._done += 1
        self._seconds += seconds
        if now - self._last < config.PROGRESS_SECONDS:
            return
        self._last = now
        elapsed = now - self._started
        share = total / self._workers
        left = max(share - self._done, 0) * elapsed / self._done
        who = (f" (worker {os.getpid()}, 1 of {self._workers})"
               if self._workers > 1 else "")
        logging.info(
            "%sLibriSpeechExampleGen %s%s: %d of %d utterances, %.2f "
            "audio-hours, %.0f audio-s/s, about %.0f s left",
            config.PROGRESS_PREFIX, self._split, who, self._done,
            math.ceil(share), self._seconds / 3600, self._seconds / elapsed,
            left)


class _DecodeDoFn(beam.DoFn):
    """Decodes one utterance's audio into a tf.train.Example.

    Main output: tf.train.Example. Tagged `quarantine`: layout.Quarantined.
    Tagged `written`: (resampled, downmixed, requantized, seconds) for the
    report. Side input: the split's utterance count, for the progress lines.
    """

    def __init__(self, split: str, min_seconds: float, max_seconds: float,
                 vocabulary: str = config.CHARACTER_VOCABULARY,
                 workers: int = 1):
        self._split = split
        self._min_seconds = min_seconds
        self._max_seconds = max_seconds
        self._bpe = vocabulary == config.MOONSHINE_BPE_VOCABULARY
        self._workers = workers
        self._progress = None
        self._counters = {name: beam.metrics.Metrics.counter(
            METRICS_NAMESPACE, name) for name in (
                "written", "resampled", "downmixed", "requantized")}
        self._seconds = beam.metrics.Metrics.distribution(
            METRICS_NAMESPACE, "audio_milliseconds")

    def setup(self):
        self._progress = _Progress(self._split, self._workers)

    def process(self, utterance: layout.Utterance, total: int):
        try:
            audio = layout.load_audio(utterance.audio_path,
                                      max_seconds=self._max_seconds,
                                      min_seconds=self._min_seconds)
        except layout.QuarantineError as e:
            yield beam.pvalue.TaggedOutput(
                _QUARANTINE_TAG,
                e.to_quarantined(utterance.utterance_id, utterance.subset))
            return
        pcm16, exact = pcm.to_pcm16(audio.samples)
        if not exact:
            logging.warning(
                "LibriSpeechExampleGen: %s rounded to 16 bits (source %s, "
                "%d Hz, %d channel(s))", utterance.audio_path,
                audio.source_subtype, audio.source_sample_rate,
                audio.source_channels)
        for name, happened in (("written", True),
                               ("resampled", audio.resampled),
                               ("downmixed", audio.downmixed),
                               ("requantized", not exact)):
            if happened:
                self._counters[name].inc()
        self._seconds.update(int(round(audio.duration * 1000)))
        self._progress.update(audio.duration, total)
        bpe_ids = (bpe.encode(utterance.transcript, add_special_tokens=False)
                   if self._bpe else None)
        yield make_example(utterance, audio, pcm16, bpe_ids)
        yield beam.pvalue.TaggedOutput(
            _WRITTEN_TAG, (audio.resampled, audio.downmixed, not exact,
                           audio.duration))


def _count_quarantined(q: layout.Quarantined) -> layout.Quarantined:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, q.reason).inc()
    logging.warning("LibriSpeechExampleGen quarantined %s", q.message)
    return q


_COUNT_KEYS = ("found", "written", "quarantined", "resampled", "downmixed",
               "requantized", "audio_seconds")


def empty_summary() -> Dict[str, Any]:
    return {"found": 0, "written": 0, "quarantined": 0,
            "quarantined_by_reason": {}, "resampled": 0, "downmixed": 0,
            "requantized": 0, "audio_seconds": 0.0}


def merge_summaries(summaries: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Sums summaries; reasons sorted, seconds rounded to milliseconds."""
    out = empty_summary()
    by_reason = collections.Counter()
    for summary in summaries:
        for key in _COUNT_KEYS:
            out[key] += summary[key]
        by_reason.update(summary["quarantined_by_reason"])
    out["quarantined_by_reason"] = dict(sorted(by_reason.items()))
    out["audio_seconds"] = round(out["audio_seconds"], 3)
    return out


class _SummaryFn(beam.CombineFn):
    """Sums events ('found', n) | ('quarantined', reason) | ('written', ...)."""

    def create_accumulator(self):
        return empty_summary()

    def add_input(self, acc, event):
        kind = event[0]
        if kind == "found":
            acc["found"] += event[1]
        elif kind == "quarantined":
            acc["quarantined"] += 1
            by_reason = acc["quarantined_by_reason"]
            by_reason[event[1]] = by_reason.get(event[1], 0) + 1
        else:
            _, resampled, downmixed, requantized, seconds = event
            acc["written"] += 1
            acc["resampled"] += int(resampled)
            acc["downmixed"] += int(downmixed)
            acc["requantized"] += int(requantized)
            acc["audio_seconds"] += float(seconds)
        return acc

    def merge_accumulators(self, accumulators):
        return merge_summaries(accumulators)

    def extract_output(self, acc):
        return merge_summaries([acc])


def _write_json(obj: Any, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


def _write_lines(lines: List[str], path: str) -> None:
    with layout.open_file(path, "w") as f:
        f.write("".join(line + "\n" for line in sorted(lines)))


def _quarantine_json(q: layout.Quarantined, split: str) -> str:
    record = {"split": split}
    record.update(q.to_dict())
    return json.dumps(record, sort_keys=True)


def _write_side_files(quarantine_dir: str, split: str, scanned, quarantined,
                      decoded) -> None:
    """The split's quarantine file and its ingestion summary (found =
    written + quarantined), beside the examples."""
    # One small file per split, written whole by one worker: Beam's S3
    # filesystem cannot write an empty object (a split with nothing
    # quarantined), tf.io.gfile can.
    _ = (quarantined
         | "QuarantineToJson" >> beam.Map(_quarantine_json, split)
         | "CollectQuarantine" >> beam.combiners.ToList()
         | "WriteQuarantine" >> beam.Map(
             _write_lines,
             os.path.join(quarantine_dir, split + QUARANTINE_SUFFIX)))
    events = (
        (scanned.keyed | "FoundUtterances" >> beam.Map(lambda _: ("found", 1)),
         scanned[_QUARANTINE_TAG]
         | "FoundQuarantined" >> beam.Map(lambda _: ("found", 1)),
         quarantined
         | "QuarantineEvents" >> beam.Map(lambda q: ("quarantined", q.reason)),
         decoded[_WRITTEN_TAG]
         | "WrittenEvents" >> beam.Map(lambda w: ("written",) + tuple(w)))
        | "FlattenEvents" >> beam.Flatten())
    _ = (events
         | "Summarise" >> beam.CombineGlobally(_SummaryFn())
         | "WriteSummary" >> beam.Map(
             _write_json, os.path.join(quarantine_dir, split + SUMMARY_SUFFIX)))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def LibriSpeechToExample(  # pylint: disable=invalid-name
        pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
        split_pattern: str) -> beam.pvalue.PCollection:
    """Reads the LibriSpeech subsets matching `split_pattern` as Examples.

    Args:
      pipeline: the Beam pipeline.
      exec_properties: input_base, input_config, custom_config and (set by
        Executor.Do) the private output uri for the quarantine side files;
        without it the quarantine is only counted and logged.
      split_pattern: glob of subset directories relative to input_base.

    Returns:
      PCollection of tf.train.Example.
    """
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    split = _split_name_for_pattern(exec_properties, split_pattern)
    min_seconds, max_seconds = audio_limits(exec_properties)
    vocab = vocabulary(exec_properties)
    subset_dirs = layout.find_subset_dirs(input_base, split_pattern)
    logging.info("LibriSpeechExampleGen split %s: subsets %s", split,
                 subset_dirs)

    scanned = (
        pipeline
        | "SubsetDirs" >> beam.Create(subset_dirs)
        | "ListChapters" >> beam.FlatMap(layout.list_subset)
        | "ReshuffleChapters" >> beam.Reshuffle()
        | "ScanChapters" >> beam.FlatMap(_scan)
        | "Route" >> beam.ParDo(_ScanPartition())
        .with_output_types(Tuple[str, layout.Utterance]).with_outputs(
            _QUARANTINE_TAG, main="keyed"))
    deduped = (
        scanned.keyed
        | "GroupById" >> beam.GroupByKey()
        | "Dedupe" >> beam.FlatMap(_dedupe)
        .with_output_types(layout.Utterance).with_outputs(
            _QUARANTINE_TAG, main="utterances"))
    utterances = deduped.utterances | "ShuffleUtterances" >> beam.Reshuffle()
    total = utterances | "CountUtterances" >> beam.combiners.Count.Globally()
    decoded = (
        utterances
        | "Decode" >> beam.ParDo(
            _DecodeDoFn(split, min_seconds, max_seconds, vocab,
                        exec_properties.get(_WORKERS_KEY, 1)),
            total=beam.pvalue.AsSingleton(total))
        .with_output_types(tf.train.Example).with_outputs(
            _QUARANTINE_TAG, _WRITTEN_TAG, main="examples"))
    quarantined = (
        (scanned[_QUARANTINE_TAG], deduped[_QUARANTINE_TAG],
         decoded[_QUARANTINE_TAG])
        | "FlattenQuarantine" >> beam.Flatten()
        | "CountQuarantine" >> beam.Map(_count_quarantined))

    output_uri = exec_properties.get(_OUTPUT_URI_KEY)
    if output_uri:
        _write_side_files(os.path.join(output_uri, QUARANTINE_DIR), split,
                          scanned, quarantined, decoded)
    return decoded.examples


# --- Executor ------------------------------------------------------------------------
class Executor(BaseExampleGenExecutor):
    """TFX ExampleGen executor for a LibriSpeech-layout corpus."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return LibriSpeechToExample

    def _workers(self) -> int:
        """Beam worker processes the local runners decode with."""
        from apache_beam.options import pipeline_options
        direct = pipeline_options.PipelineOptions(
            self._beam_pipeline_args or []).view_as(
                pipeline_options.DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return 1
        return direct.direct_num_workers or os.cpu_count() or 1

    def _write_examples(self, examples: types.Artifact,
                        exec_properties: Dict[str, Any]) -> None:
        """What TFX's ExampleGen Do does, minus its shuffle of the encoded
        examples: the utterances were shuffled before decoding, so each
        example goes from its decoder straight to its file."""
        input_config = _input_config(exec_properties)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
            output_config)
        examples.split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config,
                                                          output_config))
        with self._make_beam_pipeline() as pipeline:
            for split, records in self.GenerateExamplesByBeam(
                    pipeline, exec_properties).items():
                _ = (records
                     | f"Serialize[{split}]" >> beam.Map(
                         lambda e: e.SerializeToString())
                     | f"Write[{split}]" >> beam.io.Write(_TFRecordGzipSink(
                         os.path.join(
                             artifact_utils.get_split_uri([examples], split),
                             write_split.DEFAULT_FILE_NAME))))
        examples_utils.set_payload_format(
            examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(
                example_gen_pb2.FORMAT_TFRECORDS_GZIP))

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        input_config = _input_config(exec_properties)
        patterns = [s.pattern for s in input_config.splits]
        if len(set(patterns)) != len(patterns):
            raise ValueError(
                f"LibriSpeechExampleGen input splits need distinct patterns, "
                f"got {patterns}")
        audio_limits(exec_properties)  # fail fast on a bad custom_config
        vocabulary(exec_properties)
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        exec_properties = dict(exec_properties)
        exec_properties[_OUTPUT_URI_KEY] = examples.uri
        exec_properties[_WORKERS_KEY] = self._workers()

        self._write_examples(examples, exec_properties)

        splits = [s.name for s in input_config.splits]
        report = read_summaries(examples.uri, splits)
        report_path = os.path.join(examples.uri, REPORT_FILE)
        _write_json(report, report_path)
        examples.set_json_value_custom_property(REPORT_PROPERTY, report)
        for key in ("found", "written", "quarantined"):
            examples.set_int_custom_property(f"ingestion_{key}",
                                             report["total"][key])
        for split, summary in report["splits"].items():
            logging.info("LibriSpeechExampleGen %s: %s", split, summary)
        broken = {s: r for s, r in report["splits"].items()
                  if r["found"] != r["written"] + r["quarantined"]}
        if broken:
            raise RuntimeError(
                f"LibriSpeechExampleGen lost items (found != written + "
                f"quarantined): {broken}; see {report_path}")


def read_summaries(examples_uri: str, splits: Iterable[str]
                   ) -> Dict[str, Any]:
    """Merges the per-split summaries into the ingestion report."""
    report: Dict[str, Any] = {
        "splits": {},
        "quarantine_files": {},
    }
    quarantine_dir = os.path.join(examples_uri, QUARANTINE_DIR)
    for split in splits:
        path = os.path.join(quarantine_dir, split + SUMMARY_SUFFIX)
        with FileSystems.open(path) as f:
            report["splits"][split] = json.loads(f.read().decode("utf-8"))
        report["quarantine_files"][split] = os.path.join(
            QUARANTINE_DIR, split + QUARANTINE_SUFFIX)
    report["total"] = merge_summaries(report["splits"].values())
    return report
