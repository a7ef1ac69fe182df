"""The Trainer's input pipeline (models/data.py): bucketing, padding, order.

Padding is measured on the embedded corpus's real utterance lengths.
"""

import collections
import glob
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import EMBEDDED_CORPUS
from models import config, data, features
from conftest import tiny_preset

N_MELS = config.N_MELS
FRONT = config.front_end(config.LOG_MEL_FRONTEND)


def _edges():
    return data.bucket_boundaries(config.MAX_AUDIO_SECONDS,
                                  FRONT.units_per_second)


def _corpus_frame_counts(split_prefix="train"):
    flacs = sorted(glob.glob(os.path.join(
        EMBEDDED_CORPUS, f"{split_prefix}*", "*", "*", "*.flac")))
    assert flacs, EMBEDDED_CORPUS
    samples = [sf.info(f).frames for f in flacs]
    return [int(n) for n in features.frames_for_samples(np.array(samples))]


def _length_only_dataset(frame_counts, seed):
    """Elements shaped like the Trainer's, with the corpus's real lengths."""
    def gen():
        order = np.random.default_rng(seed).permutation(len(frame_counts))
        for i in order:
            n = frame_counts[i]
            yield ({"features": np.zeros([n, N_MELS], np.float32),
                    "lengths": np.int32(n),
                    "tokens": np.ones([3], np.int32)},
                   np.ones([3], np.int32))
    spec = ({"features": tf.TensorSpec([None, N_MELS], tf.float32),
             "lengths": tf.TensorSpec([], tf.int32),
             "tokens": tf.TensorSpec([None], tf.int32)},
            tf.TensorSpec([None], tf.int32))
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _padding_fraction(batches):
    real = padded = 0
    for inputs, _ in batches:
        real += int(tf.reduce_sum(inputs["lengths"]))
        padded += int(tf.size(inputs["lengths"])) * int(
            tf.shape(inputs["features"])[1])
    return 1.0 - real / padded


def test_bucketed_batches_pad_under_10_percent_on_the_embedded_corpus():
    frame_counts = _corpus_frame_counts()
    batch_size = config.get_preset("demo").train.batch_size
    ds = _length_only_dataset(frame_counts, seed=0)
    bucketed = _padding_fraction(
        data.batch_by_length(ds, batch_size, FRONT))
    naive = _padding_fraction(ds.padded_batch(batch_size))
    print(f"padding fraction: bucketed {bucketed:.1%}, naive {naive:.1%}")
    assert bucketed < 0.10  # the bound README states
    # The comparison is what makes the number meaningful: shuffled batches
    # padded to their longest clip waste far more.
    assert bucketed < naive / 2


def test_bucketing_keeps_every_utterance():
    frame_counts = _corpus_frame_counts("dev")
    ds = _length_only_dataset(frame_counts, seed=1)
    seen = sorted(int(n) for inputs, _ in data.batch_by_length(ds, 16, FRONT)
                  for n in inputs["lengths"].numpy())
    assert seen == sorted(frame_counts)


def test_bucket_boundaries_cover_the_longest_allowed_utterance():
    edges = _edges()
    assert edges == sorted(set(edges))
    assert edges[-1] * data.BUCKET_RATIO >= (
        config.MAX_AUDIO_SECONDS / config.HOP_SECONDS)
    ratios = np.array(edges[1:]) / np.array(edges[:-1])
    assert np.all(ratios < data.BUCKET_RATIO + 0.02)


def test_batch_seconds_sizes_batches_by_audio_not_by_count():
    frame_counts = _corpus_frame_counts()
    seconds = 40.0
    ds = _length_only_dataset(frame_counts, seed=0)
    sizes, padded_seconds = [], []
    for inputs, _ in data.batch_by_length(ds, 16, FRONT,
                                          batch_seconds=seconds):
        rows, frames = inputs["features"].shape[:2]
        sizes.append((rows, frames))
        padded_seconds.append(rows * frames * config.HOP_SECONDS)
    assert sum(rows for rows, _ in sizes) == len(frame_counts)
    # No batch holds more padded audio than asked; full batches of short
    # clips hold more clips than full batches of long ones.
    assert max(padded_seconds) <= seconds
    by_length = sorted(sizes, key=lambda s: s[1])
    assert by_length[0][0] > by_length[-1][0]
    # An epoch counts the batches one pass of the data fills.
    edges = _edges()
    per_bucket = data.bucket_batch_sizes(edges, 16, seconds, FRONT.units_per_second,
                                        config.MAX_AUDIO_SECONDS)
    assert per_bucket[0] == int(seconds // (edges[0] * config.HOP_SECONDS))
    counts = collections.Counter(frame_counts)
    n = data.count_batches(counts, edges, per_bucket)
    assert len(sizes) - len(edges) - 1 <= n <= len(sizes)
    # Sized by count, an epoch is the examples over the batch size.
    assert data.count_batches(counts, edges, data.bucket_batch_sizes(
        edges, 16, 0.0, FRONT.units_per_second, config.MAX_AUDIO_SECONDS)
    ) == -(-len(frame_counts) // 16)


def test_static_shapes_pad_to_bucket_edges_and_a_token_ladder():
    frame_counts = _corpus_frame_counts("dev")
    rng = np.random.default_rng(0)
    n_tokens = rng.integers(5, 60, len(frame_counts))

    def gen():
        for n, t in zip(frame_counts, n_tokens):
            yield ({"features": np.ones([n, N_MELS], np.float32),
                    "lengths": np.int32(n),
                    "tokens": np.ones([t], np.int32)},
                   np.ones([t], np.int32))
    spec = ({"features": tf.TensorSpec([None, N_MELS], tf.float32),
             "lengths": tf.TensorSpec([], tf.int32),
             "tokens": tf.TensorSpec([None], tf.int32)},
            tf.TensorSpec([None], tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    edges = _edges() + [
        int(config.MAX_AUDIO_SECONDS / config.HOP_SECONDS) + 1]
    frames_seen, shapes = [], set()
    for inputs, targets in data.batch_by_length(ds, 8, FRONT,
                                                static_shapes=True):
        frames = inputs["features"].shape[1]
        assert frames + 1 in edges
        token_edge = inputs["tokens"].shape[1]
        assert token_edge in data.token_edges()
        assert inputs["tokens"].shape == targets.shape
        # The tokens pad to their own ladder, not to the frame edge: at most
        # TOKEN_EDGE_RATIO of the longest target, plus the rounding of the
        # ladder's edges to TOKEN_PAD_MULTIPLE.
        longest = int(tf.reduce_max(tf.reduce_sum(tf.cast(
            targets != config.PAD_ID, tf.int32), 1)))
        assert longest <= token_edge <= (longest * data.TOKEN_EDGE_RATIO
                                         + data.TOKEN_PAD_MULTIPLE), (
            longest, token_edge)
        # Padding is PAD, which every loss masks out.
        real = tf.reduce_sum(tf.cast(targets != config.PAD_ID, tf.int32))
        assert int(real) == int(tf.reduce_sum(tf.cast(
            inputs["tokens"] != config.PAD_ID, tf.int32)))
        shapes.add((frames, inputs["tokens"].shape[1]))
        frames_seen += list(inputs["lengths"].numpy())
    assert sorted(frames_seen) == sorted(frame_counts)
    # Dynamic shapes would give about one shape per batch.
    assert len(shapes) <= len(edges) * 4


@pytest.mark.slow
def test_training_order_is_deterministic_under_the_seed(ci_steps):
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(ci_steps.transform_graph.uri)
    files = [os.path.join(ci_steps.examples.uri, "Split-train", "*.gz")]

    def first_batches(p, n=6):
        ds = data.make_dataset(files, output, p, training=True, batch_size=2)
        return [inputs["lengths"].numpy().tolist()
                for inputs, _ in ds.take(n)]
    once = first_batches(tiny_preset())
    assert once == first_batches(tiny_preset())
    assert once != first_batches(tiny_preset(seed=7))


@pytest.mark.slow
def test_batches_hold_the_features_the_transform_graph_computes(ci_steps):
    """Each padded row of a batch is its utterance's Transform features."""
    import tensorflow_transform as tft

    import pipeline_steps

    preset = tiny_preset()
    output = tft.TFTransformOutput(ci_steps.transform_graph.uri)
    view = pipeline_steps.trainer_view(ci_steps, preset, "train")
    files = [os.path.join(ci_steps.examples.uri, "Split-train", "*.gz")]
    ds = data.make_dataset(files, output, preset, training=False,
                           batch_size=2)
    seen = 0
    by_length = {n: (f, t) for f, n, t in view.values()}
    for inputs, targets in ds:
        for row in range(inputs["lengths"].shape[0]):
            n = int(inputs["lengths"][row])
            features, tokens = by_length[n]
            np.testing.assert_array_equal(inputs["features"][row, :n],
                                          features)
            assert not np.any(inputs["features"][row, n:])
            real = targets[row][targets[row] != config.PAD_ID].numpy()
            np.testing.assert_array_equal(real, tokens[1:])
            seen += 1
    assert seen == len(view)


def test_waveform_buckets_are_in_samples():
    waveform = config.front_end(config.WAVEFORM_FRONTEND)
    edges = data.bucket_boundaries(config.MAX_AUDIO_SECONDS,
                                   waveform.units_per_second)
    frames = _edges()
    assert len(edges) == len(frames)
    assert edges[0] == data.MIN_BUCKET_SECONDS * config.SAMPLE_RATE
    assert edges[-1] * data.BUCKET_RATIO >= (
        config.MAX_AUDIO_SECONDS * config.SAMPLE_RATE)
    clips = [4000, 16_000, 17_000, 64_000]

    def gen():
        for n in clips:
            yield ({"features": np.ones([n], np.float32),
                    "lengths": np.int32(n), "tokens": np.ones([3], np.int32)},
                   np.ones([3], np.int32))

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        {"features": tf.TensorSpec([None], tf.float32),
         "lengths": tf.TensorSpec([], tf.int32),
         "tokens": tf.TensorSpec([None], tf.int32)},
        tf.TensorSpec([None], tf.int32)))
    batches = list(data.batch_by_length(ds, 4, waveform))
    # 16,000 and 17,000 samples share a bucket; 4,000 and 64,000 do not.
    assert sorted(inputs["lengths"].numpy().tolist()
                  for inputs, _ in batches) == [[4000], [16_000, 17_000],
                                                [64_000]]
    for inputs, _ in batches:
        assert inputs["features"].shape.rank == 2


def _record_files(tmp_path, shards, per_file=3):
    """GZIP TFRecord files holding b'<file>-<record>' records."""
    paths = []
    for i in range(shards):
        path = str(tmp_path / f"part-{i}.gz")
        with tf.io.TFRecordWriter(path, "GZIP") as w:
            for j in range(per_file):
                w.write(f"{i}-{j}".encode())
        paths.append(path)
    return paths


@pytest.mark.parametrize("n_files", [1, 3, 4])
def test_each_worker_reads_its_own_shard(tmp_path, n_files):
    """Two input pipelines (a multi-worker strategy) read disjoint shards
    that together hold every record once: whole files when there are at
    least as many files as pipelines, else every other record."""
    files = _record_files(tmp_path, n_files)
    everything = sorted(r.decode() for r in
                        data.read_shard(files).as_numpy_iterator())
    assert len(everything) == 3 * n_files
    shards = [sorted(r.decode() for r in data.read_shard(
        files, tf.distribute.InputContext(2, i, 2)).as_numpy_iterator())
        for i in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == everything
    if n_files >= 2:  # whole files: no file is split between workers
        owners = [{r.split("-")[0] for r in shard} for shard in shards]
        assert not owners[0] & owners[1]


@pytest.mark.slow
def test_curriculum_batches_hold_only_short_utterances_first(ci_steps):
    """The first curriculum_steps training batches hold only utterances of
    at most curriculum_max_seconds; longer ones come after."""
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(ci_steps.transform_graph.uri)
    files = [os.path.join(ci_steps.examples.uri, "Split-train", "*.gz")]
    frames = sorted(data.length_counts(output))
    # A cut between the corpus's shortest and longest utterance.
    cut = frames[len(frames) // 2]
    seconds = cut / FRONT.units_per_second
    steps = 5
    preset = tiny_preset(curriculum_steps=steps,
                         curriculum_max_seconds=seconds)
    ds = data.make_dataset(files, output, preset, training=True,
                           batch_size=2)
    longest = [int(tf.reduce_max(inputs["lengths"]))
               for inputs, _ in ds.take(steps + 20)]
    assert max(longest[:steps]) <= cut
    assert max(longest[steps:]) > cut
    # A curriculum no utterance fits is refused, not waited on forever.
    with pytest.raises(ValueError, match="shorter than every training"):
        data.make_dataset(files, output, tiny_preset(
            curriculum_steps=steps,
            curriculum_max_seconds=0.5 * frames[0] / FRONT.units_per_second),
            training=True, batch_size=2)
    # Without a curriculum the same seed reaches past the cut at once.
    plain = data.make_dataset(files, output, tiny_preset(), training=True,
                              batch_size=2)
    assert max(int(tf.reduce_max(inputs["lengths"]))
               for inputs, _ in plain.take(steps)) > cut
