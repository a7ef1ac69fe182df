"""The moonshine-tfx pipeline: LibriSpeech layout in, a blessed Moonshine SavedModel out.

Wiring only, in the style of TFX's penguin example: model code lives in
`models/` and is referenced by dotted path (pipeline/options.py), so the same
definition compiles for Kubeflow (code baked into the image) and runs
locally. Every option comes from one `RunOptions`; the callers add only
paths, the metadata connection and Beam args.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional

from tfx import v1 as tfx
from tfx import version as tfx_version

from components.librispeech_example_gen.component import (
    LibriSpeechExampleGen, default_input_config)
from components.model_exporter.component import ModelExporter
from components.pusher.component import Pusher
from components.tflite_evaluator.component import TFLiteEvaluator
from models import config
from models import metrics
from models import preprocessing
from pipeline import options as run_options

RunOptions = run_options.RunOptions
SCHEMA_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "schemas", "schema.pbtxt")
RESOLVER_ID = "latest_blessed_model_resolver"
BASELINE_IMPORTER_ID = "baseline_model_importer"
EVAL_SPLIT = "eval"  # what the Evaluator and the TFLiteEvaluator score


class DataComponents(NamedTuple):
    """The data steps shared by the full pipeline and `validate-data`."""
    example_gen: LibriSpeechExampleGen
    statistics_gen: tfx.components.StatisticsGen
    schema_gen: tfx.components.ImportSchemaGen
    example_validator: tfx.components.ExampleValidator


def create_data_components(data_root: str, options: RunOptions,
                           schema_file: str = SCHEMA_FILE) -> DataComponents:
    """Ingestion, statistics, the curated schema and the ExampleValidator.

    The model's vocabulary matters here: the BPE one has the ExampleGen
    write each transcript's BPE ids (see models/bpe.py).
    """
    example_gen = LibriSpeechExampleGen(
        input_base=data_root,
        input_config=default_input_config(options.splits),
        max_audio_seconds=options.max_audio_seconds,
        vocabulary=options.preset.model.vocabulary)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    # With the curated schema TFDV treats the audio as opaque bytes (its
    # image_domain): length statistics, no top-k over every utterance.
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"])
    return DataComponents(example_gen, statistics_gen, schema_gen,
                          example_validator)


def _pipeline(options: RunOptions, pipeline_root: str, components: List,
              metadata_connection_config,
              beam_pipeline_args: Optional[List[str]]) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=options.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=options.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []))


def create_data_validation_pipeline(
    options: RunOptions, pipeline_root: str, data_root: str,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    schema_file: str = SCHEMA_FILE,
) -> tfx.dsl.Pipeline:
    """The data steps of create_pipeline alone (`moonshine-tfx validate-data`)."""
    return _pipeline(options, pipeline_root, list(create_data_components(
        data_root, options, schema_file)), metadata_connection_config,
        beam_pipeline_args)


def create_transform(options: RunOptions,
                     data: DataComponents) -> tfx.components.Transform:
    """Transform of the raw examples: the graph of the model's features
    (log-mel or waveform) and tokens, analysed on the train split.

    It materialises nothing: the Trainer applies the graph to the raw
    examples as it reads them (models/data.py), since writing float32
    log-mel through GZIP costs more than computing it.
    """
    return tfx.components.Transform(
        examples=data.example_gen.outputs["examples"],
        schema=data.schema_gen.outputs["schema"],
        preprocessing_fn=run_options.PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=["train"]),
        materialize=False,
        # TFDV statistics over 80 x frames floats per utterance cost more
        # than the training itself and validate nothing new.
        disable_statistics=True,
        custom_config=preprocessing.transform_options(options.preset.model))


def _trainer(options: RunOptions, data: DataComponents,
             transform: tfx.components.Transform,
             pipeline_root: str) -> tfx.components.Trainer:
    return tfx.components.Trainer(
        run_fn=options.run_fn,
        # The raw examples: the Trainer computes the features with the
        # Transform graph (models/data.py).
        examples=data.example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=data.schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"],
                                       num_steps=options.train_steps),
        eval_args=tfx.proto.EvalArgs(splits=["eval"],
                                     num_steps=options.eval_steps),
        # Only what training depends on (decoding and the gate are not), and
        # a backup dir outside the per-execution model_run_dir: a Trainer
        # re-run after a crash resumes from its last backup, not step 0.
        custom_config={"preset": config.training_dict(options.preset),
                       "backup_dir": os.path.join(pipeline_root, "Trainer",
                                                  "backup"),
                       # Only when set, so runs without them keep their cache.
                       **({"init_from": options.init_from}
                          if options.init_from else {}),
                       # run_fn checks that TF_CONFIG names that many.
                       **({config.TRAINER_WORKERS_KEY: options.trainer_workers}
                          if options.trainer_workers > 1 else {}),
                       **({"max_audio_seconds": options.max_audio_seconds}
                          if options.max_audio_seconds
                          != config.MAX_AUDIO_SECONDS else {})})


def _baseline(options: RunOptions, use_resolver: bool,
              baseline_model_uri: Optional[str]):
    """The Evaluator's baseline node and channel: the latest blessed model
    (Resolver), an imported model (Kubeflow), or none."""
    if use_resolver and baseline_model_uri:
        raise ValueError("baseline_model_uri replaces the Resolver: pass "
                         "use_resolver=False with it")
    if use_resolver:
        resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(
                type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id(RESOLVER_ID)
        return resolver, resolver.outputs["model"]
    if baseline_model_uri:
        # Where no Resolver runs (open-source KFP): import a known exported
        # model artifact (the dir holding Format-Serving/) as the baseline.
        importer = tfx.dsl.Importer(
            source_uri=baseline_model_uri,
            artifact_type=tfx.types.standard_artifacts.Model,
            # Marks the current Format-Serving/ layout for TFX's path lookup.
            custom_properties={"tfx_version": tfx_version.__version__},
        ).with_id(BASELINE_IMPORTER_ID)
        return importer, importer.outputs["result"]
    return None, None


def create_pipeline(
    options: RunOptions,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_connection_config=None,
    beam_pipeline_args: Optional[List[str]] = None,
    schema_file: str = SCHEMA_FILE,
    use_resolver: bool = True,
    baseline_model_uri: Optional[str] = None,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline of one run.

    Release gate: the Evaluator blesses a model whose eval WER and CER are at
    most the options' bounds and, when a baseline exists (the latest blessed
    model, or `baseline_model_uri`), whose WER is at most
    `max_wer_regression` above the baseline's; the Pusher pushes blessed
    models, never the one already serving, with the TFLite variants whose
    eval WER the TFLiteEvaluator found within config.TFLITE_MAX_WER_INCREASE
    of the SavedModel's.
    """
    data = create_data_components(data_root, options, schema_file)
    transform = create_transform(options, data)
    trainer = _trainer(options, data, transform, pipeline_root)
    exporter = ModelExporter(
        model=trainer.outputs["model"],
        transform_graph=transform.outputs["transform_graph"],
        decode=options.preset.decode, export_fn=options.export_fn)
    serving_model = exporter.outputs["exported_model"]

    baseline_node, baseline = _baseline(options, use_resolver,
                                        baseline_model_uri)
    evaluator = tfx.components.Evaluator(
        examples=data.example_gen.outputs["examples"],
        model=serving_model,
        baseline_model=baseline,
        example_splits=[EVAL_SPLIT],
        eval_config=metrics.eval_config(
            wer_upper_bound=options.wer_upper_bound,
            cer_upper_bound=options.cer_upper_bound,
            max_wer_regression=options.max_wer_regression))

    # The on-device files, scored on the same split with the same WER.
    tflite_evaluator = TFLiteEvaluator(
        examples=data.example_gen.outputs["examples"], model=serving_model,
        split=EVAL_SPLIT)

    pusher = Pusher(
        model=serving_model,
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=serving_model_dir)),
        tflite_evaluation=tflite_evaluator.outputs["evaluation"])

    components = list(data) + [transform, trainer, exporter]
    if baseline_node is not None:
        components.append(baseline_node)
    components += [evaluator, tflite_evaluator, pusher]
    return _pipeline(options, pipeline_root, components,
                     metadata_connection_config, beam_pipeline_args)
