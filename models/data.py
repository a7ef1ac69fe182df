"""The Trainer's input pipeline: raw examples -> features -> bucketed batches.

Read the ExampleGen's gzipped TFRecords, shuffle, and compute the model's
features on the fly with Transform's own graph (its transform_features_layer,
the very graph the serving signatures run, so train and serve cannot skew):
log-mel (or the waveform) and tokens, TRANSFORM_BATCH utterances at a time;
then bucket by length and pad. Transform only analyses (normalisation
statistics, the length counts below) and materialises nothing: writing
float32 log-mel through GZIP cost more than computing it
(BENCHMARKS.md, "Data steps at scale"), and features computed here are as
cheap per epoch as reading them back would be. Augmentation happens on the
batches inside the train step (models/augment.py), as icefall keeps its data
module apart from its training loop, except rooms and noise, which act on
the training waveforms before the features (models/room.py). Lengths are in
the front end's unit (config.FrontEnd: frames of log-mel, or samples of
waveform).

An epoch is the number of batches one pass of the training data fills; it is
computed from the length counts Transform's analyzers already wrote
(`LENGTH_COUNTS_VOCABULARY`), never by reading the data before training.
"""

from __future__ import annotations

import bisect
import math
import os
from typing import Dict, List, Mapping, Optional, Tuple

import tensorflow as tf

from models import config
from models import room

# Length buckets grow geometrically, so padding inside a batch stays under
# 1 - 1/BUCKET_RATIO whatever the utterance length (as Lhotse's and icefall's
# duration buckets do), from the shortest clip worth a bucket to the longest
# utterance ingestion lets through.
BUCKET_RATIO = 1.1
MIN_BUCKET_SECONDS = 1.0
SHUFFLE_BUFFER = 2048
# Under static_shapes (XLA) token sequences pad to the next edge of a
# ladder of multiples of TOKEN_PAD_MULTIPLE growing by TOKEN_EDGE_RATIO: a
# handful of token shapes per frame bucket (tokens grow with duration) and
# at most 1 - 1/TOKEN_EDGE_RATIO of the positions padding.
TOKEN_PAD_MULTIPLE = 16
TOKEN_EDGE_RATIO = 1.25
MAX_TOKEN_EDGE = 1 << 14
# Transform's vocabulary of the analysed (train) split's input lengths, with
# their counts (models/preprocessing.py writes it).
LENGTH_COUNTS_VOCABULARY = "train_input_lengths"


# Raw examples go through the Transform graph this many at a time.
TRANSFORM_BATCH = 32
# What the features and tokens are computed from.
_RAW_FEATURES = (config.AUDIO_PCM_KEY, config.AUDIO_KEY,
                 config.TRANSCRIPT_KEY, config.MOONSHINE_BPE_IDS_KEY)


def raw_to_features(tf_transform_output, front: config.FrontEnd,
                    waveform_augment=None):
    """A batch of serialized raw examples -> (features ragged [B, (units)
    (, channels)], lengths [B], tokens ragged [B, (n)]) through Transform's
    graph.

    With waveform_augment ((samples, lengths, batch index) -> samples,
    models/room.py) the function takes (batch index, serialized): the audio
    is decoded as the graph decodes it, augmented, and fed to the same graph
    as float audio, the way the serving signature feeds it."""
    spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items()
            if k in _RAW_FEATURES}
    layer = tf_transform_output.transform_features_layer()

    def transform(serialized, index=None):
        raw = tf.io.parse_example(serialized, spec)
        if waveform_augment is not None:
            # Imported here: preprocessing imports this module.
            from models import preprocessing, serving

            samples, lengths = preprocessing.raw_audio(raw)
            raw.update(serving.raw_audio_features(
                waveform_augment(samples, lengths, index), lengths, spec))
        out = layer(raw)
        lengths = tf.cast(out[front.length_key], tf.int64)
        values = tf.RaggedTensor.from_sparse(out[front.feature_key])
        if front.channels is not None:
            values = tf.RaggedTensor.from_row_lengths(
                tf.reshape(values.flat_values, [-1, front.channels]), lengths)
        tokens = tf.RaggedTensor.from_sparse(out[config.TOKENS_KEY])
        return values, tf.cast(lengths, tf.int32), tf.cast(tokens, tf.int32)
    if waveform_augment is not None:
        return lambda index, serialized: transform(serialized, index)
    return transform


def _element(values, lengths, tokens):
    """One utterance as the model's inputs and targets (teacher forcing)."""
    return ({"features": values, "lengths": lengths,
             "tokens": tokens[:-1]}, tokens[1:])


def bucket_boundaries(max_seconds: float, per_second: float) -> List[int]:
    """Length bucket edges from MIN_BUCKET_SECONDS to max_seconds, in units
    of `per_second` per second."""
    edge = MIN_BUCKET_SECONDS * per_second
    edges = []
    while edge < max_seconds * per_second:
        edges.append(int(round(edge)))
        edge *= BUCKET_RATIO
    return edges


def bucket_batch_sizes(boundaries: List[int], batch_size: int,
                       batch_seconds: float, per_second: float,
                       max_seconds: float) -> List[int]:
    """Utterances per batch for each bucket: batch_size, or as many as fit
    in batch_seconds of padded audio (at least one)."""
    if not batch_seconds:
        return [batch_size] * (len(boundaries) + 1)
    # A bucket's batch pads to its longest member, below its upper edge.
    uppers = [b / per_second for b in boundaries] + [max_seconds]
    return [max(1, int(batch_seconds // upper)) for upper in uppers]


def bucket_plan(batch_size: int, batch_seconds: float,
                front: config.FrontEnd,
                max_seconds: float = config.MAX_AUDIO_SECONDS
                ) -> Tuple[List[int], List[int]]:
    """(bucket edges, utterances per batch of each bucket) in the front
    end's length unit, up to the longest utterance ingestion lets through."""
    per_second = front.units_per_second
    boundaries = bucket_boundaries(max_seconds, per_second)
    return boundaries, bucket_batch_sizes(boundaries, batch_size,
                                          batch_seconds, per_second,
                                          max_seconds)


def count_batches(length_counts: Mapping[int, int], boundaries: List[int],
                  batch_sizes: List[int]) -> int:
    """Full batches one pass of utterances fills when bucketed (training
    repeats the data before bucketing, so no batch is partial), from
    {length: utterances of that length}: len / batch_size when every bucket
    has that size."""
    counts = [0] * len(batch_sizes)
    for length, n in length_counts.items():
        counts[bisect.bisect_right(boundaries, length)] += n
    return math.ceil(round(sum(c / size for c, size in zip(counts, batch_sizes)),
                           6))


def length_counts(tf_transform_output) -> Dict[int, int]:
    """{input length: utterances} of the training split, as Transform's
    analyzers counted them."""
    path = tf_transform_output.vocabulary_file_by_name(
        LENGTH_COUNTS_VOCABULARY)
    counts: Dict[int, int] = {}
    with tf.io.gfile.GFile(path) as f:
        for line in f:
            count, length = line.split()  # "<count> <value>", as TFT writes
            counts[int(length)] = int(count)
    return counts


def batch_by_length(ds: tf.data.Dataset, batch_size: int,
                    front: config.FrontEnd, batch_seconds: float = 0.0,
                    static_shapes: bool = False,
                    max_seconds: float = config.MAX_AUDIO_SECONDS
                    ) -> tf.data.Dataset:
    """Padded batches of utterances of similar length (bucketed).

    static_shapes pads each batch's features to its bucket's upper edge and
    its tokens to the next token_edges() edge, so an XLA-compiled step sees
    a few dozen shapes instead of one per batch; max_seconds is then the
    longest utterance ingestion let through (the last bucket's edge).
    """
    boundaries, sizes = bucket_plan(batch_size, batch_seconds, front,
                                    max_seconds)
    if static_shapes:
        boundaries = boundaries + [
            int(max_seconds * front.units_per_second) + 1]
        sizes = sizes + sizes[-1:]
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda x, y: x["lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=sizes,
        padded_shapes=({"features": list(front.padded_shape), "lengths": [],
                        "tokens": [None]}, [None]),
        padding_values=({"features": 0.0, "lengths": 0,
                         "tokens": config.PAD_ID}, config.PAD_ID),
        drop_remainder=False)
    # Not pad_to_bucket_boundary: it pads every unknown dimension to the
    # frame edge, tokens included (5x the positions the targets need).
    return ds.map(_static_padding(boundaries)) if static_shapes else ds


def token_edges() -> List[int]:
    """The ladder token sequences pad to under static_shapes."""
    edges, edge = [], float(TOKEN_PAD_MULTIPLE)
    while edge <= MAX_TOKEN_EDGE:
        rounded = -(-int(edge) // TOKEN_PAD_MULTIPLE) * TOKEN_PAD_MULTIPLE
        if not edges or rounded > edges[-1]:
            edges.append(rounded)
        edge *= TOKEN_EDGE_RATIO
    return edges


def _pad_axis(x: tf.Tensor, size, value) -> tf.Tensor:
    """x padded with value along axis 1 to size."""
    pad = tf.concat([[[0, 0], [0, size - tf.shape(x)[1]]],
                     tf.zeros([tf.rank(x) - 2, 2], tf.int32)], 0)
    padded = tf.pad(x, pad, constant_values=value)
    # tf.pad forgets every static dimension; the mel axis must stay known
    # (the layers and the augmentations read it).
    padded.set_shape(x.shape[:1].concatenate([None]).concatenate(x.shape[2:]))
    return padded


def _static_padding(boundaries: List[int]):
    """(inputs, targets) -> the same, features padded to the batch's bucket
    edge (as pad_to_bucket_boundary would: edge - 1) and tokens to the next
    token edge, both with values every loss masks out."""
    frame_edges = tf.constant(boundaries, tf.int32)
    ladder = tf.constant(token_edges(), tf.int32)

    def pad(inputs, targets):
        longest = tf.cast(tf.reduce_max(inputs["lengths"]), tf.int32)
        frames = frame_edges[tf.reduce_sum(
            tf.cast(frame_edges <= longest, tf.int32))] - 1
        tokens = ladder[tf.reduce_sum(
            tf.cast(ladder < tf.shape(targets)[1], tf.int32))]
        inputs = dict(
            inputs, features=_pad_axis(inputs["features"], frames, 0.0),
            tokens=_pad_axis(inputs["tokens"], tokens, config.PAD_ID))
        return inputs, _pad_axis(targets, tokens, config.PAD_ID)
    return pad


def split_records(examples_uri: str, split: str) -> tf.data.Dataset:
    """The serialized records of one split of an Examples artifact (TFX
    writes `Split-<split>/*.gz`)."""
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    return tf.data.TFRecordDataset(files, compression_type="GZIP")


def read_shard(files: List[str],
               input_context: Optional[tf.distribute.InputContext] = None
               ) -> tf.data.Dataset:
    """The serialized records of `files` that this input pipeline reads.

    Under a multi-worker strategy (input_context from
    distribute_datasets_from_function) each pipeline reads its own files,
    or, when there are fewer files than pipelines, every pipeline reads all
    of them and keeps its own share of the records; without a context, all
    records.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    if pipelines <= 1:
        return tf.data.TFRecordDataset(files, compression_type="GZIP",
                                       num_parallel_reads=tf.data.AUTOTUNE)
    index = input_context.input_pipeline_id
    if len(files) >= pipelines:
        own = tf.data.Dataset.from_tensor_slices(files).shard(pipelines,
                                                              index)
        return own.interleave(
            lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Sequential read: the record order, and so each shard, is fixed.
    return tf.data.TFRecordDataset(files, compression_type="GZIP").shard(
        pipelines, index)


def make_dataset(file_patterns: List[str], tf_transform_output,
                 preset: config.Preset, training: bool,
                 batch_size: Optional[int] = None,
                 static_shapes: bool = False,
                 max_seconds: float = config.MAX_AUDIO_SECONDS,
                 input_context: Optional[tf.distribute.InputContext] = None
                 ) -> tf.data.Dataset:
    """Bucketed, padded batches of (model inputs, target tokens).

    Training data repeats before bucketing so that no bucket is flushed half
    full at each epoch boundary. Files are listed in order; with an
    input_context (a multi-worker strategy) each worker reads its own shard
    (read_shard) in batches of its replicas' share of the global batch (and
    of batch_seconds), and evaluation data repeats too: every worker must
    run the same number of steps, whatever its shard holds.
    """
    files = sorted(f for p in file_patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ValueError(f"no examples match {file_patterns}")
    batch_size = batch_size or preset.train.batch_size
    batch_seconds = preset.train.batch_seconds
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        batch_seconds /= input_context.num_replicas_in_sync
    front = preset.model.front_end
    ds = read_shard(files, input_context)
    if training:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=preset.train.seed,
                        reshuffle_each_iteration=True)
    if training or input_context is not None:
        ds = ds.repeat()
    ds = ds.batch(TRANSFORM_BATCH)
    room_augment = None
    if training and room.enabled(preset.train):
        # Each raw batch's index seeds its rooms and noise (models/room.py).
        room_augment = room.batch_augmenter(
            preset.train, input_context.input_pipeline_id
            if input_context is not None else 0)
        ds = ds.enumerate()
    ds = (ds.map(raw_to_features(tf_transform_output, front, room_augment),
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .unbatch()
          .map(_element))
    batches = batch_by_length(ds, batch_size, front, batch_seconds,
                              static_shapes, max_seconds)
    train_cfg = preset.train
    if training and train_cfg.curriculum_steps:
        longest = _curriculum_longest(tf_transform_output, front, train_cfg)
        short = batch_by_length(
            ds.filter(lambda x, y: x["lengths"] <= longest), batch_size,
            front, batch_seconds, static_shapes, max_seconds)
        # SortaGrad-like (Amodei et al. 2016): an attention decoder learns
        # to align on short utterances in a few hundred steps, on 10-20 s
        # ones hardly at all from scratch (it loops on one word).
        batches = short.take(train_cfg.curriculum_steps).concatenate(batches)
    return batches.prefetch(tf.data.AUTOTUNE)


def _curriculum_longest(tf_transform_output, front: config.FrontEnd,
                        train_cfg: config.TrainConfig) -> int:
    """The longest input (front-end units) the curriculum's batches hold.

    A curriculum no training utterance fits would wait forever for its first
    batch: it is refused, from Transform's counts of the lengths."""
    longest = int(train_cfg.curriculum_max_seconds * front.units_per_second)
    shortest = min(length_counts(tf_transform_output), default=None)
    if shortest is None or shortest > longest:
        raise ValueError(
            f"curriculum_max_seconds {train_cfg.curriculum_max_seconds:g} is "
            "shorter than every training utterance (the shortest is "
            f"{(shortest or 0) / front.units_per_second:.2f} s): raise it, "
            "or set curriculum_steps to 0")
    return longest
