"""Training throughput: bucketed vs naive batching, side by side.

    python benchmarks/bench_training.py --quick   # < 1 minute, prints the ratio last
    python benchmarks/bench_training.py           # demo and tiny presets, updates BENCHMARKS.md

Throughput is audio-seconds of real (unpadded) speech per wall-second of
optimiser steps, through the Trainer's own `train_step` (losses, SpecAugment,
AdamW). Utterance lengths and transcript lengths are those of the embedded
corpus's train split; feature values are random, which costs the same.
"Naive" pads each shuffled batch to its longest utterance; "bucketed" is the
Trainer's `data.batch_by_length`. Each (preset, batching) pair runs in its own
process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from models import config  # noqa: E402

CORPUS = os.path.join(common.REPO_ROOT, "data", "embedded-corpus")


def corpus_shapes():
    """(frames, transcript characters) of every train utterance."""
    import soundfile as sf
    from models import features
    shapes = []
    for trans in sorted(glob.glob(os.path.join(CORPUS, "train*", "*", "*",
                                               "*.trans.txt"))):
        folder = os.path.dirname(trans)
        with open(trans) as f:
            for line in f:
                utterance_id, _, text = line.strip().partition(" ")
                samples = sf.info(os.path.join(folder, utterance_id + ".flac")).frames
                frames = int(features.frames_for_samples(np.array([samples]))[0])
                shapes.append((frames, len(text)))
    return shapes


def _dataset(shapes, batch_size, bucketed, seed=0):
    import tensorflow as tf
    from models import data

    def gen():
        rng = np.random.default_rng(seed)
        while True:
            for i in rng.permutation(len(shapes)):
                frames, chars = shapes[i]
                tokens = rng.integers(3, config.VOCAB_SIZE, chars + 2).astype(np.int32)
                tokens[0], tokens[-1] = config.SOS_ID, config.EOS_ID
                yield ({"features": rng.standard_normal(
                            [frames, config.N_MELS]).astype(np.float32),
                        "lengths": np.int32(frames), "tokens": tokens[:-1]},
                       tokens[1:])

    spec = ({"features": tf.TensorSpec([None, config.N_MELS], tf.float32),
             "lengths": tf.TensorSpec([], tf.int32),
             "tokens": tf.TensorSpec([None], tf.int32)},
            tf.TensorSpec([None], tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    if bucketed:
        ds = data.batch_by_length(ds, batch_size,
                                  config.front_end(config.LOG_MEL_FRONTEND))
    else:
        ds = ds.padded_batch(batch_size)
    return ds.prefetch(2)


def measure(preset_name: str, bucketed: bool, steps: int, warmup: int,
            shapes) -> dict:
    """Runs in a child process: one preset, one batching, its own peak RSS.

    The batches are drawn first and replayed through fit(), as the Trainer
    runs: the timed steps are exactly these batches, after warm-up steps
    that trace the step and relax it to any shape.
    """
    import tensorflow as tf
    import tf_keras as keras
    from models import trainer

    class StepTimer(keras.callbacks.Callback):
        """Sums the wall time of each optimiser step as fit() runs it."""
        elapsed = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.elapsed += time.perf_counter() - self.start

    preset = config.get_preset(preset_name)
    batch_size = preset.train.batch_size
    model = trainer.build_trainer(preset, total_steps=10 * (steps + warmup))
    iterator = iter(_dataset(shapes, batch_size, bucketed))
    batches = [next(iterator) for _ in range(warmup + steps)]
    # Batch and time vary; the mel axis stays static, as in the Trainer.
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] * min(len(t.shape), 2) + list(
            t.shape[2:]), t.dtype), batches[0])

    def replay(chosen):
        return tf.data.Dataset.from_generator(lambda: iter(chosen),
                                              output_signature=spec)

    model.fit(replay(batches[:warmup]), epochs=1, steps_per_epoch=warmup,
              verbose=0)
    timer = StepTimer()
    timed = batches[warmup:]
    model.fit(replay(timed), epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[timer])
    audio_frames = sum(int(tf.reduce_sum(b[0]["lengths"])) for b in timed)
    padded_frames = sum(int(tf.size(b[0]["lengths"])) *
                        int(tf.shape(b[0]["features"])[1]) for b in timed)
    audio_seconds = audio_frames * config.HOP_SECONDS
    return {"preset": preset_name, "bucketed": bucketed,
            "audio_s_per_s": audio_seconds / timer.elapsed,
            "padding": 1.0 - audio_frames / padded_frames,
            "steps": steps, "batch_size": batch_size,
            "peak_rss_mb": common.peak_rss_mb()}


def _child(args):
    return measure(*args)


def run(presets, steps: int, warmup: int) -> list:
    shapes = corpus_shapes()
    jobs = [(p, b, steps, warmup, shapes) for p in presets for b in (False, True)]
    ctx = multiprocessing.get_context("spawn")
    results = []
    for job in jobs:  # one at a time: they share the same cores
        with ctx.Pool(1) as pool:
            results.append(pool.apply(_child, (job,)))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        results = run(["ci"], steps=8, warmup=4)
    else:
        results = run(["demo", "tiny"], steps=30, warmup=8)
    by_key = {(r["preset"], r["bucketed"]): r for r in results}
    rows = []
    for r in results:
        kind = "bucketed" if r["bucketed"] else "naive"
        print(f"{r['preset']:5s} {kind:8s} {r['audio_s_per_s']:8.1f} audio-s/s  "
              f"padding {r['padding']:.1%}  peak RSS {r['peak_rss_mb']:.0f} MB")
        rows.append((f"{r['preset']} (batch {r['batch_size']}), {kind}",
                     f"{r['audio_s_per_s']:.1f} audio-s/s, padding "
                     f"{r['padding']:.1%}, peak RSS {r['peak_rss_mb']:.0f} MB"))
    ratios = {p: by_key[(p, True)]["audio_s_per_s"] / by_key[(p, False)]["audio_s_per_s"]
              for p in sorted({r["preset"] for r in results})}
    for preset, ratio in ratios.items():
        rows.append((f"{preset}: bucketed / naive", f"{ratio:.2f}x"))
    if not args.quick:
        common.update_benchmarks_md(
            "Training throughput (Trainer train_step, embedded-corpus shapes)",
            "python benchmarks/bench_training.py", rows)
    headline = ratios.get("demo", next(iter(ratios.values())))
    print(f"{headline:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
