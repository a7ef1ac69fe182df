"""The moonshine-tfx pipeline: LibriSpeech layout in, a blessed Moonshine SavedModel out.

Wiring only, in the style of TFX's penguin example: model code lives in
`models/` and is referenced by dotted path, so the same definition compiles
for Kubeflow (code baked into the image) and runs locally.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, NamedTuple, Optional

from tfx import v1 as tfx
from tfx import version as tfx_version

from components.librispeech_example_gen.component import (
    LibriSpeechExampleGen, default_input_config)
from models import config
from models import metrics
from models import preprocessing

PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
SCHEMA_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "schemas", "schema.pbtxt")
RESOLVER_ID = "latest_blessed_model_resolver"
BASELINE_IMPORTER_ID = "baseline_model_importer"


def with_model_options(preset: config.Preset,
                       vocabulary: Optional[str] = None,
                       frontend: Optional[str] = None,
                       beam_width: Optional[int] = None) -> config.Preset:
    """The preset with another vocabulary, front end and/or serving beam
    width (None keeps the preset's): `run --vocabulary moonshine_bpe
    --frontend waveform` trains the published model's configuration at any
    preset's size; `--beam-width 1` exports greedy decoding."""
    model = preset.model
    if vocabulary:
        model = model.with_vocabulary(vocabulary)
    if frontend:
        model = dataclasses.replace(model, frontend=frontend)
    decode = preset.decode
    if beam_width:
        decode = dataclasses.replace(decode, beam_width=beam_width)
    return dataclasses.replace(preset, model=model, decode=decode)


class DataComponents(NamedTuple):
    """The data steps shared by the full pipeline and `validate-data`."""
    example_gen: LibriSpeechExampleGen
    statistics_gen: tfx.components.StatisticsGen
    schema_gen: tfx.components.ImportSchemaGen
    example_validator: tfx.components.ExampleValidator


def create_data_components(
    data_root: str,
    split_patterns: Optional[Dict[str, str]] = None,
    max_audio_seconds: float = config.MAX_AUDIO_SECONDS,
    schema_file: str = SCHEMA_FILE,
    vocabulary: str = config.CHARACTER_VOCABULARY,
) -> DataComponents:
    """Ingestion, statistics, the curated schema and the ExampleValidator.

    `vocabulary` is the model's: the BPE one has the ExampleGen write each
    transcript's BPE ids (see models/bpe.py).
    """
    example_gen = LibriSpeechExampleGen(
        input_base=data_root,
        input_config=default_input_config(split_patterns),
        custom_config={"max_audio_seconds": max_audio_seconds},
        vocabulary=vocabulary)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"])
    return DataComponents(example_gen, statistics_gen, schema_gen,
                          example_validator)


def create_data_validation_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    split_patterns: Optional[Dict[str, str]] = None,
    max_audio_seconds: float = config.MAX_AUDIO_SECONDS,
    schema_file: str = SCHEMA_FILE,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """The data steps of create_pipeline alone (`moonshine-tfx validate-data`)."""
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=list(create_data_components(
            data_root, split_patterns, max_audio_seconds, schema_file)),
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    preset: config.Preset,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    split_patterns: Optional[Dict[str, str]] = None,
    train_steps: Optional[int] = None,
    eval_steps: Optional[int] = None,
    wer_upper_bound: Optional[float] = None,
    max_audio_seconds: float = config.MAX_AUDIO_SECONDS,
    schema_file: str = SCHEMA_FILE,
    enable_cache: bool = True,
    use_resolver: bool = True,
    baseline_model_uri: Optional[str] = None,
    max_wer_regression: float = config.MAX_WER_REGRESSION,
    run_fn: str = RUN_FN,
    init_from: Optional[str] = None,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline; every tunable is a parameter.

    Release gate: the Evaluator blesses a model whose eval WER is at most
    `wer_upper_bound` (default: the preset's) and, when a baseline exists (the
    latest blessed model, or `baseline_model_uri`), at most
    `max_wer_regression` above the baseline's; the Pusher pushes only blessed
    models. `run_fn` is the Trainer's entry point (dotted path).
    """
    example_gen, statistics_gen, schema_gen, example_validator = (
        create_data_components(data_root, split_patterns, max_audio_seconds,
                               schema_file, preset.model.vocabulary))

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(
            analyze=["train"], transform=list(config.SPLITS)),
        # TFDV statistics over 80 x frames floats per utterance cost more
        # than the training itself and validate nothing new.
        disable_statistics=True,
        custom_config={"preset": preset.name,
                       **preprocessing.transform_options(preset.model)})

    trainer = tfx.components.Trainer(
        run_fn=run_fn,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"],
                                       num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(splits=["eval"], num_steps=eval_steps),
        # A backup dir outside the per-execution model_run_dir: a Trainer
        # re-run after a crash resumes from its last epoch instead of step 0.
        custom_config={"preset": config.preset_to_dict(preset),
                       "backup_dir": os.path.join(pipeline_root, "Trainer",
                                                  "backup"),
                       # Only when set, so runs without them keep their cache.
                       **({"init_from": init_from} if init_from else {}),
                       **({"max_audio_seconds": max_audio_seconds}
                          if max_audio_seconds != config.MAX_AUDIO_SECONDS
                          else {})})

    components = [example_gen, statistics_gen, schema_gen, example_validator,
                  transform, trainer]

    if use_resolver and baseline_model_uri:
        raise ValueError("baseline_model_uri replaces the Resolver: pass "
                         "use_resolver=False with it")
    baseline = None
    if use_resolver:
        model_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(
                type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id(RESOLVER_ID)
        components.append(model_resolver)
        baseline = model_resolver.outputs["model"]
    elif baseline_model_uri:
        # Where no Resolver runs (open-source KFP): import a known Trainer
        # model artifact (the dir holding Format-Serving/) as the baseline.
        baseline_importer = tfx.dsl.Importer(
            source_uri=baseline_model_uri,
            artifact_type=tfx.types.standard_artifacts.Model,
            # Marks the current Format-Serving/ layout for TFX's path lookup.
            custom_properties={"tfx_version": tfx_version.__version__},
        ).with_id(BASELINE_IMPORTER_ID)
        components.append(baseline_importer)
        baseline = baseline_importer.outputs["result"]

    bound = preset.wer_upper_bound if wer_upper_bound is None else wer_upper_bound
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline,
        example_splits=["eval"],
        eval_config=metrics.eval_config(
            wer_upper_bound=bound,
            label_key=config.TRANSCRIPT_KEY,
            prediction_key=config.TEXT_OUTPUT_KEY,
            max_wer_regression=max_wer_regression))

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=serving_model_dir)))
    components += [evaluator, pusher]

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
