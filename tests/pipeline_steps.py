"""The pipeline's own ExampleGen and Transform, run on a few real utterances.

`ingest_and_transform(tmp, preset)` builds the pipeline with
`create_pipeline(RunOptions(preset))` and runs the executors of its LibriSpeechExampleGen
and Transform exactly as wired there (their exec properties, the curated
schema), without an orchestrator: seconds, not a pipeline run. The corpus is
a few utterances of each embedded subset (`tiny_corpus`). Transform
materialises nothing; `trainer_view` gives each utterance's features and
tokens as the Trainer computes them (models/data.raw_to_features).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from typing import List

import numpy as np
import tensorflow as tf

from conftest import EMBEDDED_CORPUS

# Utterances per subset prefix: the train split batches more than one.
UTTERANCES = (("train", 4), ("dev", 2), ("test", 2))


def tiny_corpus(dest: str, utterances=UTTERANCES) -> str:
    """The first utterances of each embedded subset, in LibriSpeech layout."""
    for prefix, n in utterances:
        chapter = sorted(glob.glob(os.path.join(
            EMBEDDED_CORPUS, f"{prefix}*", "*", "*")))[0]
        rel = os.path.relpath(chapter, EMBEDDED_CORPUS)
        os.makedirs(os.path.join(dest, rel))
        (trans,) = glob.glob(os.path.join(chapter, "*.trans.txt"))
        with open(trans) as f:
            lines = f.readlines()[:n]
        with open(os.path.join(dest, rel, os.path.basename(trans)), "w") as f:
            f.writelines(lines)
        for line in lines:
            name = line.split(" ", 1)[0] + ".flac"
            shutil.copy(os.path.join(chapter, name),
                        os.path.join(dest, rel, name))
    return dest


@dataclasses.dataclass
class Steps:
    data_root: str
    examples: object  # standard_artifacts.Examples (raw)
    transform_graph: object  # standard_artifacts.TransformGraph


def ingest_and_transform(tmp: str, preset) -> Steps:
    from tfx import v1 as tfx
    from tfx.components.transform import executor as transform_executor
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as specs

    from components.librispeech_example_gen import executor as gen_executor
    from components.librispeech_example_gen.component import (
        LibriSpeechExampleGen)
    from pipeline import pipeline as pipeline_def
    from pipeline.options import RunOptions

    data_root = tiny_corpus(os.path.join(tmp, "corpus"))
    p = pipeline_def.create_pipeline(
        RunOptions(preset, pipeline_name="steps"),
        pipeline_root=os.path.join(tmp, "root"), data_root=data_root,
        serving_model_dir=os.path.join(tmp, "serving"), use_resolver=False)
    (example_gen,) = [c for c in p.components
                      if isinstance(c, LibriSpeechExampleGen)]
    (transform,) = [c for c in p.components
                    if isinstance(c, tfx.components.Transform)]

    def props(component):
        return {k: v for k, v in component.exec_properties.items()
                if v is not None}

    def artifact(kind, name):
        a = kind()
        a.uri = os.path.join(tmp, name)
        return a

    examples = artifact(standard_artifacts.Examples, "examples")
    gen_executor.Executor().Do({}, {"examples": [examples]},
                               props(example_gen))
    schema = artifact(standard_artifacts.Schema, "schema")
    os.makedirs(schema.uri)
    shutil.copy(pipeline_def.SCHEMA_FILE, schema.uri)
    graph = artifact(standard_artifacts.TransformGraph, "transform_graph")
    transform_executor.Executor().Do(
        {specs.EXAMPLES_KEY: [examples], specs.SCHEMA_KEY: [schema]},
        {specs.TRANSFORM_GRAPH_KEY: [graph]}, props(transform))
    return Steps(data_root, examples, graph)


def trainer_view(steps: Steps, preset, split: str):
    """{utterance id: (features, length, tokens)} of one split, computed as
    the Trainer computes them from the raw examples."""
    import tensorflow_transform as tft
    from models import config, data

    transform = data.raw_to_features(
        tft.TFTransformOutput(steps.transform_graph.uri),
        preset.model.front_end)
    examples = records(steps.examples.uri, split)
    values, lengths, tokens = transform(tf.constant(
        [e.SerializeToString() for e in examples]))
    ids = [e.features.feature[config.UTTERANCE_ID_KEY].bytes_list.value[0]
           .decode() for e in examples]
    return {uid: (v.numpy(), int(n), t.numpy()) for uid, v, n, t in zip(
        ids, values, lengths, tokens)}


def records(uri: str, split: str) -> List[tf.train.Example]:
    """The examples of one split of an Examples artifact."""
    files = sorted(glob.glob(os.path.join(uri, f"Split-{split}", "*.gz")))
    assert files, (uri, split)
    return [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(
        files, compression_type="GZIP").as_numpy_iterator()]


def padded_audio(data_root: str, prefix: str):
    """The flacs of one subset as the `transcribe` signature takes them:
    (float32 [clips, samples] zero-padded, int64 [clips] lengths)."""
    import soundfile as sf

    clips = [sf.read(f, dtype="float32")[0] for f in sorted(glob.glob(
        os.path.join(data_root, f"{prefix}*", "*", "*", "*.flac")))]
    audio = np.zeros([len(clips), max(map(len, clips))], np.float32)
    for i, clip in enumerate(clips):
        audio[i, :len(clip)] = clip
    return tf.constant(audio), tf.constant([len(c) for c in clips], tf.int64)
