"""LibriSpeechExampleGen: a FileBasedExampleGen over a LibriSpeech-layout tree.

    example_gen = LibriSpeechExampleGen(
        input_base='/data/LibriSpeech',
        input_config=default_input_config(
            {'train': 'train-clean-100*', 'eval': 'dev-clean*'}),
        max_audio_seconds=20.0,
        vocabulary='moonshine_bpe')  # also write each transcript's BPE ids

Each input split pattern is a glob of subset directories under input_base; the
output keeps those splits (no re-hashing, so speakers never leak across
LibriSpeech's own splits). Audio is written as 16 kHz mono float32 samples;
bad items are quarantined (see executor.py for the side files).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Union

from google.protobuf import struct_pb2
from tfx.components.example_gen import driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2

from components.librispeech_example_gen import executor
from models import config


def default_input_config(
        split_mapping: Optional[Mapping[str, str]] = None
) -> example_gen_pb2.Input:
    """One input split per LibriSpeech subset glob.

    Args:
      split_mapping: split name -> glob of subset directories relative to
        input_base, e.g. {'train': 'train-clean-100*', 'eval': 'dev-other*'}.
        Default: config.SUBSET_PREFIX_TO_SPLIT, i.e. train* -> 'train',
        dev* -> 'eval', test* -> 'test'.
    """
    if split_mapping is None:
        split_mapping = {split: prefix + "*" for prefix, split
                         in config.SUBSET_PREFIX_TO_SPLIT.items()}
    if not split_mapping:
        raise ValueError("split_mapping is empty")
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=name, pattern=pattern)
        for name, pattern in split_mapping.items()])


def make_custom_config(values: Mapping[str, Any]
                       ) -> example_gen_pb2.CustomConfig:
    """Packs {'max_audio_seconds': ..., 'vocabulary': ...} as a Struct in a
    CustomConfig (the durations as numbers, the vocabulary as a string)."""
    unknown = sorted(set(values) - set(executor.CUSTOM_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown LibriSpeechExampleGen custom_config keys {unknown}; "
            f"known: {list(executor.CUSTOM_CONFIG_KEYS)}")
    vocabulary = values.get(executor.VOCABULARY_KEY)
    if vocabulary is not None and vocabulary not in config.VOCABULARY_SIZES:
        raise ValueError(
            f"unknown vocabulary {vocabulary!r}; choose one of "
            f"{sorted(config.VOCABULARY_SIZES)}")
    struct = struct_pb2.Struct()
    struct.update({k: str(v) if k == executor.VOCABULARY_KEY else float(v)
                   for k, v in values.items()})
    custom_config = example_gen_pb2.CustomConfig()
    custom_config.custom_config.Pack(struct)
    return custom_config


class _RecursiveFingerprintProcessor(input_processor.FileBasedInputProcessor):
    """Fingerprints every file under the matched subset directories.

    The stock fingerprint stats only what the glob matches (the subset
    directories), so a replaced flac would not invalidate the cache.
    """

    def get_input_fingerprint(self, span: int,
                              version: Optional[int]) -> Optional[str]:
        base = super().get_input_fingerprint(span, version)
        parts = [base]
        for split in self._splits:
            pattern = self.get_pattern_for_span_version(split.pattern, span,
                                                        version)
            num_files = total_bytes = xor_sum = mtime_sum = 0
            for top in sorted(fileio.glob(
                    os.path.join(self._input_base_uri, pattern))):
                if not fileio.isdir(top):
                    continue
                for root, _, files in fileio.walk(top):
                    for name in files:
                        num_files += 1
                        try:
                            stat = fileio.stat(os.path.join(root, name))
                        except (fileio.NotFoundError, OSError):
                            continue  # e.g. a dangling link: counted only
                        mtime = int(stat.mtime_nsec // 1_000_000_000)
                        total_bytes += stat.length
                        xor_sum ^= mtime
                        mtime_sum += mtime
            parts.append(
                f"tree:{split.name},num_files:{num_files},"
                f"total_bytes:{total_bytes},xor_checksum:{xor_sum},"
                f"sum_checksum:{mtime_sum}")
        return "\n".join(parts)


class LibriSpeechDriver(driver.FileBasedDriver):
    """FileBasedDriver whose input fingerprint covers the whole subset trees."""

    def get_input_processor(self, splits, range_config=None,
                            input_base_uri=None):
        assert input_base_uri
        return _RecursiveFingerprintProcessor(input_base_uri, splits,
                                              range_config)


def _merged_custom_config(custom_config, max_audio_seconds, min_audio_seconds,
                         vocabulary):
    """custom_config with the keyword arguments laid over it, packed as
    FileBasedExampleGen wants it; a runtime parameter passes through."""
    values: Dict[str, Any] = {}
    if isinstance(custom_config, example_gen_pb2.CustomConfig):
        values = executor.custom_config_to_dict(custom_config)
    elif isinstance(custom_config, Mapping):
        values = dict(custom_config)
    elif custom_config is not None:  # RuntimeParameter
        if (max_audio_seconds is not None or min_audio_seconds is not None
                or vocabulary is not None):
            raise ValueError("max/min_audio_seconds and vocabulary cannot "
                             "be combined with a runtime-parameter "
                             "custom_config")
        return custom_config
    if max_audio_seconds is not None:
        values[executor.MAX_AUDIO_SECONDS_KEY] = max_audio_seconds
    if min_audio_seconds is not None:
        values[executor.MIN_AUDIO_SECONDS_KEY] = min_audio_seconds
    if vocabulary is not None:
        values[executor.VOCABULARY_KEY] = vocabulary
    # A vocabulary Transform tokenises needs nothing extra here: left out,
    # runs that differ only in it share the data steps' cache.
    vocabulary = values.get(executor.VOCABULARY_KEY)
    if (vocabulary in config.VOCABULARY_SIZES
            and vocabulary not in config.EXAMPLE_GEN_ID_VOCABULARIES):
        del values[executor.VOCABULARY_KEY]
    return make_custom_config(values) if values else None


class LibriSpeechExampleGen(FileBasedExampleGen):
    """Ingests a LibriSpeech-layout corpus as tf.train.Examples.

    Output `examples` (standard Examples, gzipped TFRecords, one split per
    input split) with features config.AUDIO_PCM_KEY (16-bit PCM bytes,
    16 kHz mono), TRANSCRIPT_KEY, UTTERANCE_ID_KEY (bytes), SPEAKER_ID_KEY,
    CHAPTER_ID_KEY (int64), DURATION_KEY (float seconds),
    DURATION_BUCKET_KEY (bytes) and, for the BPE vocabulary,
    MOONSHINE_BPE_IDS_KEY (int64 list). Quarantine files and the ingestion
    report live next to the splits (see executor.py).
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = LibriSpeechDriver

    def __init__(
            self,
            input_base: Optional[str] = None,
            input_config: Optional[Union[example_gen_pb2.Input,
                                         data_types.RuntimeParameter]] = None,
            output_config: Optional[Union[example_gen_pb2.Output,
                                          data_types.RuntimeParameter]] = None,
            custom_config: Optional[Union[Dict[str, Any],
                                          example_gen_pb2.CustomConfig,
                                          data_types.RuntimeParameter]] = None,
            range_config: Optional[Union[range_config_pb2.RangeConfig,
                                         data_types.RuntimeParameter]] = None,
            max_audio_seconds: Optional[float] = None,
            min_audio_seconds: Optional[float] = None,
            vocabulary: Optional[str] = None):
        """Constructs a LibriSpeechExampleGen.

        Args:
          input_base: the directory holding the subset directories (e.g. the
            extracted `LibriSpeech/`).
          input_config: example_gen_pb2.Input whose split patterns are globs
            of subset directories; default `default_input_config()`.
          output_config: optional; default `Output()`, which keeps the input
            splits even when there is only one (FileBasedExampleGen would
            hash a single split 2:1 into train/eval). To hash-split one input
            split, pass an Output with `partition_feature_name=SPEAKER_ID_KEY`
            so no speaker straddles two splits.
          custom_config: a dict with max_audio_seconds / min_audio_seconds /
            vocabulary, or an example_gen_pb2.CustomConfig packing such a
            Struct.
          range_config: as FileBasedExampleGen.
          max_audio_seconds: longer audio is quarantined as too_long
            (default config.MAX_AUDIO_SECONDS); overrides custom_config.
          min_audio_seconds: shorter audio is quarantined as too_short
            (default config.MIN_AUDIO_SECONDS); overrides custom_config.
          vocabulary: config.MOONSHINE_BPE_VOCABULARY also writes each
            transcript's BPE ids (config.MOONSHINE_BPE_IDS_KEY) for Transform;
            config.CHARACTER_VOCABULARY (the default) writes nothing extra and
            is left out of custom_config, so such runs keep their cache.
            Overrides custom_config.
        """
        custom_config = _merged_custom_config(
            custom_config, max_audio_seconds, min_audio_seconds, vocabulary)
        super().__init__(
            input_base=input_base,
            input_config=input_config or default_input_config(),
            output_config=output_config or example_gen_pb2.Output(),
            custom_config=custom_config,
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP)
