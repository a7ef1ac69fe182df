"""The Trainer's input pipeline alone: read, parse, compute the features,
bucket, pad and augment, no model, in audio-seconds per second.

    python benchmarks/bench_input.py            # demo and tiny batching
    python benchmarks/bench_input.py --quick    # prints the rate / 3,000 last

The raw examples and the Transform graph are the embedded corpus's, through
the pipeline's own ExampleGen and Transform (benchmarks/bench_scale.py's
run). The batches come from models/data.make_dataset as the Trainer builds
them (training: shuffled, repeated, features computed with the Transform
graph, bucketed), then pass the train step's augmentation
(models/augment.augment) in a tf.function, as the step would apply it; the
rate counts real (unpadded) audio. The target: one H100 training the tiny
preset at 3,000 audio-hours per GPU-hour consumes 3,000 audio-s/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_scale, common  # noqa: E402

TARGET = 3000.0  # audio-s/s one H100 needs for tiny at 3,000 h per GPU-hour
SECTION = "Trainer input pipeline (read, parse, bucket, augment; no model)"


def measure_child(transform_graph: str, train_files: str, preset_name: str,
                  batches: int, train_overrides: Optional[dict] = None
                  ) -> dict:
    """The preset's input pipeline rate; train_overrides replace TrainConfig
    fields (e.g. the waveform augmentation's, models/room.py)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from models import augment, config, data

    preset = config.get_preset(preset_name)
    preset = dataclasses.replace(preset, train=dataclasses.replace(
        preset.train, **(train_overrides or {})))
    output = tft.TFTransformOutput(transform_graph)
    ds = data.make_dataset([train_files], output, preset, training=True)
    step = tf.function(lambda x: augment.augment(
        x["features"], x["lengths"], preset.train))
    it = iter(ds)
    for _ in range(5):  # warm-up: the shuffle buffer, tracing
        step(next(it)[0])
    frames = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(batches):
        inputs, _ = next(it)
        features, _ = step(inputs)
        features.numpy()
        frames += int(tf.reduce_sum(inputs["lengths"]))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    audio_seconds = frames * config.HOP_SECONDS
    return {"preset": preset_name, "batch_size": preset.train.batch_size,
            "audio_s_per_s": audio_seconds / elapsed,
            "cpu_s_per_audio_s": cpu / audio_seconds,
            "peak_rss_mb": common.peak_rss_mb()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-input-")
    run = bench_scale._in_child(  # pylint: disable=protected-access
        bench_scale.run_child, bench_scale.CORPUS, os.path.join(work, "run"),
        1)
    graph = glob.glob(os.path.join(work, "run", "pipeline_root", "Transform",
                                   "transform_graph", "*"))[0]
    files = os.path.join(glob.glob(os.path.join(
        work, "run", "pipeline_root", "LibriSpeechExampleGen", "examples",
        "*"))[0], "Split-train", "*")
    presets = ["demo"] if args.quick else ["demo", "tiny"]
    ctx = multiprocessing.get_context("spawn")
    rows, results = [], []
    for preset in presets:
        with ctx.Pool(1) as pool:
            results.append(pool.apply(measure_child, (
                graph, files, preset, 20 if args.quick else 60)))
    cores = os.cpu_count() or 1
    for r in results:
        rows.append((f"{r['preset']} (batch {r['batch_size']}), {cores} cores",
                     f"{r['audio_s_per_s']:.0f} audio-s/s "
                     f"({r['audio_s_per_s'] / cores:.0f} per core), peak RSS "
                     f"{r['peak_rss_mb']:.0f} MB"))
    rate = results[0]["audio_s_per_s"]
    rows.append(("target: tiny on one H100 at 3,000 audio-hours per GPU-hour",
                 f"{TARGET:.0f} audio-s/s: {TARGET / (rate / cores):.1f} "
                 "cores at this per-core rate"))
    rows.append(("corpus", f"the embedded corpus, {run['utterances']} "
                 f"utterances, {run['audio_seconds'] / 3600:.2f} h"))
    common.report(rows, rate / TARGET, quick=args.quick, section=SECTION,
                  command="python benchmarks/bench_input.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
