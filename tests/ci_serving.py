"""A `ci`-preset Moonshine and a Transform graph to export it with, in seconds.

The Transform graph is analysed (tft_beam) over a few synthetic utterances,
not a pipeline run; the model has random weights with a spread-out final
norm, so it emits varied, deterministic characters. test_serving and
test_tflite export from these.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from models import config

RATE = config.SAMPLE_RATE


def noise(seconds, seed=0, amplitude=0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(seconds * RATE))).astype(
        np.float32)


def analyse_transform(transform_dir: str, transcripts=(b"HELLO",) * 3,
                      model_config=None) -> str:
    """Transform's graph over one noise utterance per transcript, for
    `model_config`'s features and vocabulary (default: the seed's), with the
    raw schema beside it as TFX's Transform writes it (serving reads the
    audio feature's spec from there)."""
    import functools

    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import (dataset_metadata,
                                                  metadata_io, schema_utils)

    from models import preprocessing

    spec = {config.AUDIO_KEY: tf.io.VarLenFeature(tf.float32),
            config.TRANSCRIPT_KEY: tf.io.FixedLenFeature([1], tf.string),
            config.UTTERANCE_ID_KEY: tf.io.FixedLenFeature([1], tf.string),
            config.DURATION_KEY: tf.io.FixedLenFeature([1], tf.float32)}
    raw = [{config.AUDIO_KEY: noise(0.5 + 0.3 * (i % 3), seed=i),
            config.TRANSCRIPT_KEY: [text],
            config.UTTERANCE_ID_KEY: [f"1-2-{i:04d}".encode()],
            config.DURATION_KEY: [0.5 + 0.3 * (i % 3)]}
           for i, text in enumerate(transcripts)]
    preprocessing_fn = functools.partial(
        preprocessing.preprocessing_fn,
        custom_config=preprocessing.transform_options(model_config)
        if model_config is not None else None)
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(spec))
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        transform_fn = (
            (p | beam.Create(raw), metadata)
            | tft_beam.AnalyzeDataset(preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    metadata_io.write_metadata(metadata, os.path.join(
        transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return transform_dir


# Cross-attention query and output gains of a model that listens: random
# weights attend almost uniformly over the frames, so every clip of speech
# decodes to the same text; sharper, louder cross-attention makes the text
# depend on the audio.
LISTENING_GAINS = (30.0, 4.0)


def random_model(preset: config.Preset, seed: int = 7,
                 listening: bool = False):
    """A Moonshine of `preset` with seeded random weights; a spread-out
    final norm makes it emit varied characters, `listening` ones that
    depend on the audio (LISTENING_GAINS)."""
    import tensorflow as tf
    import tf_keras as keras

    from models import moonshine

    keras.utils.set_random_seed(seed)
    # With the CTC head training saves, so either decoding can export it.
    model = moonshine.Moonshine(preset.model, with_ctc_head=True)
    gamma = model.decoder.norm.gamma
    gamma.assign(3.0 * tf.random.stateless_normal(gamma.shape, [seed, 1]))
    if listening:
        query_gain, output_gain = LISTENING_GAINS
        for block in model.decoder.blocks:
            for dense, gain in ((block.cross_attention.q_proj, query_gain),
                                (block.cross_attention.o_proj, output_gain)):
                dense.kernel.assign(dense.kernel * gain)
    return model
