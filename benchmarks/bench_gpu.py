"""GPU training throughput of the tiny preset: float32 vs mixed_bfloat16,
both XLA-compiled, with the Trainer's input pipeline rate beside them.

    python benchmarks/bench_gpu.py --json-out gpu.json  # one GPU, < 8 min
    python benchmarks/bench_gpu.py --no-input           # model steps only
    python benchmarks/bench_gpu.py --quick              # CPU, about 1 min

The full mode updates BENCHMARKS.md; every mode prints the JSON result, a
table, and last the ratio. --quick runs the ci preset on batches of four
1.5 s utterances, XLA on, wherever it is (a CPU): it checks the script, it
measures nothing.

Model steps: the Trainer's own train step (models/trainer.build_trainer:
losses, SpecAugment, AdamW), its precision and XLA set through TrainConfig
as models/distribution.py reads them, stepped by Keras' own train_function
(what fit() calls each step). Batches: synthetic utterances (chirps plus
noise) with random character transcripts at English speech's rate
(CHARS_PER_SECOND), through the trainer's feature path:
features.log_mel_spectrogram, a per-bin z-score over every frame (standing
in for Transform's analysers), tokenizer.tf_encode, data._element, then
data.batch_by_length with static_shapes, as run_fn batches when XLA is on.
XLA compiles each padded shape once, so the utterances fall in a few length
buckets (Plan.bucket_seconds), one shape each; warm-up steps run one batch
of each shape (compiling it) untimed, then the same timed batches run under
each precision. Audio-s/s counts real (unpadded) audio. Peak GPU memory is
TensorFlow's allocator peak, reset before each precision.

Input pipeline: benchmarks/bench_input.py's measure_child over the embedded
corpus's ExampleGen and Transform output (make_dataset plus augmentation,
no model).

The last line is mixed_bfloat16 steps/s over float32 steps/s (e.g. `1.85x`).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import gc
import glob
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The input phase's child processes share the GPU with this one.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from models import config  # noqa: E402

PRESET = "tiny"
QUICK_PRESET = "ci"  # --quick: tracing tiny's step takes ~45 s on 2 CPU cores
PRECISIONS = config.PRECISIONS[:2]  # float32, mixed_bfloat16
assert PRECISIONS == ("float32", "mixed_bfloat16"), PRECISIONS
SECTION = "GPU (bench_gpu.py)"
COMMAND = "python benchmarks/bench_gpu.py --json-out gpu.json"
CHARS_PER_SECOND = (12.0, 18.0)  # English speech, uniform per utterance
SEED = 0
BUCKET_MARGIN = 2  # frames between a synthetic length and its bucket's edges
MAX_DRAWS_PER_STEP = 4  # batches drawn per timed batch before giving up
GPU = "GPU:0"
# The input phase is skipped once the run has taken this long, so that the
# whole run stays inside its 8 minutes whatever XLA's compile times.
INPUT_DEADLINE_SECONDS = 270.0
NO_GPU = ("bench_gpu.py: no GPU found (TensorFlow {tf} sees none); run it on "
          "a GPU host with CUDA 12 and cuDNN installed, or use --quick")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures."""
    preset: str
    batch_size: int  # utterances per batch
    # Each synthetic utterance lies in the trainer's length bucket holding
    # one of these durations, so each bucket is one padded shape to compile.
    bucket_seconds: Tuple[float, ...]
    utterances: int  # distinct synthetic utterances (shuffled, repeated)
    steps: int  # timed steps per precision
    warmup_passes: int  # untimed passes over one batch of each shape
    jit_compile: bool
    input_batches: int  # batches of the input-pipeline phase (0: none)


FULL = Plan(preset=PRESET,
            batch_size=config.get_preset(PRESET).train.batch_size,
            bucket_seconds=(6.0, 12.0), utterances=256, steps=40,
            warmup_passes=2, jit_compile=True, input_batches=60)
QUICK = Plan(preset=QUICK_PRESET, batch_size=4, bucket_seconds=(1.5,),
             utterances=16, steps=8, warmup_passes=1, jit_compile=True,
             input_batches=0)


# --- Synthetic utterances through the trainer's feature path ---------------

def _transcript(rng: np.random.Generator, seconds: float) -> str:
    """Random words of the character vocabulary at a speech-like rate."""
    letters = [c for c in config.CHARACTERS if c.isalpha()]
    n = int(round(seconds * rng.uniform(*CHARS_PER_SECOND)))
    text = "".join(rng.choice(letters) if rng.random() > 0.18 else " "
                   for _ in range(n))
    return text.strip() or letters[0]


def _log_mels(waves: List[np.ndarray]) -> List[np.ndarray]:
    """Each wave's [frames, n_mels] log-mel, TRANSFORM_BATCH at a time."""
    from models import data, features
    out = []
    for i in range(0, len(waves), data.TRANSFORM_BATCH):
        chunk = waves[i:i + data.TRANSFORM_BATCH]
        lengths = np.array([len(w) for w in chunk])
        padded = np.zeros([len(chunk), lengths.max()], np.float32)
        for row, w in zip(padded, chunk):
            row[:len(w)] = w
        mel, frames = features.log_mel_spectrogram(padded, lengths)
        out += [m[:f] for m, f in zip(mel.numpy(), frames.numpy())]
    return out


def duration_ranges(plan: Plan, front: config.FrontEnd
                    ) -> List[Tuple[float, float]]:
    """(shortest, longest) seconds inside each of plan.bucket_seconds'
    length buckets, BUCKET_MARGIN units clear of its edges."""
    from models import data
    per_second = front.units_per_second
    edges = data.bucket_boundaries(config.MAX_AUDIO_SECONDS, per_second)
    ranges = []
    for seconds in plan.bucket_seconds:
        i = bisect.bisect_right(edges, seconds * per_second)
        lo, hi = edges[i - 1], edges[i]
        ranges.append(((lo + BUCKET_MARGIN) / per_second,
                       (hi - BUCKET_MARGIN) / per_second))
    return ranges


def synthetic_elements(plan: Plan, front: config.FrontEnd):
    """The dataset of single utterances the trainer's batching takes:
    ({features, lengths, tokens}, targets), as data.make_dataset unbatches."""
    import tensorflow as tf
    from models import data, preprocessing, tokenizer
    rng = np.random.default_rng(SEED)
    ranges = duration_ranges(plan, front)
    seconds = [rng.uniform(*ranges[i % len(ranges)])
               for i in range(plan.utterances)]
    waves = [common.synthetic_audio(1, s, seed=i)[0]
             for i, s in enumerate(seconds)]
    mels = _log_mels(waves)
    valid = np.concatenate(mels)
    epsilon = preprocessing._VARIANCE_EPSILON  # pylint: disable=protected-access
    scale = 1.0 / np.sqrt(valid.var(0) + epsilon)
    mels = [(m - valid.mean(0)) * scale for m in mels]
    lengths = np.array([len(m) for m in mels], np.int32)
    values = tf.RaggedTensor.from_row_lengths(np.concatenate(mels), lengths)
    tokens = tf.cast(tokenizer.tf_encode(
        [_transcript(rng, s) for s in seconds]), tf.int32)
    return tf.data.Dataset.from_tensor_slices((values, lengths, tokens)).map(
        data._element)  # pylint: disable=protected-access


def _shape(batch) -> Tuple[int, int]:
    """(padded frames, padded tokens) of a batch: XLA's compile key."""
    inputs, _ = batch
    return int(inputs["features"].shape[1]), int(inputs["tokens"].shape[1])


def draw_batches(plan: Plan, preset: config.Preset):
    """(warm-up, timed) batches of the trainer's static-shape bucketing:
    the first batch drawn of each length bucket fixes its shape (token
    lengths could give a bucket several), one of each warms up, and
    plan.steps more of those shapes, in the order drawn, are timed."""
    from models import data
    front = preset.model.front_end
    ds = data.batch_by_length(
        synthetic_elements(plan, front).shuffle(plan.utterances, seed=SEED)
        .repeat(), plan.batch_size, front, preset.train.batch_seconds,
        static_shapes=True)
    first: Dict[int, object] = {}  # padded frames -> the first batch
    timed = []
    for batch in ds.take(MAX_DRAWS_PER_STEP * plan.steps):
        chosen = first.setdefault(_shape(batch)[0], batch)
        if chosen is not batch and _shape(chosen) == _shape(batch):
            timed.append(batch)
        if len(timed) == plan.steps:
            return list(first.values()) * plan.warmup_passes, timed
    shapes = sorted(map(_shape, first.values()))
    raise RuntimeError(f"only {len(timed)} of {plan.steps} batches matched "
                       f"their bucket's first shape {shapes}")


def audio_seconds(batches, preset: config.Preset) -> float:
    per_second = preset.model.front_end.units_per_second
    return sum(float(np.sum(b[0]["lengths"])) for b in batches) / per_second


def padding(batches) -> float:
    real = sum(float(np.sum(b[0]["lengths"])) for b in batches)
    padded = sum(np.prod(b[0]["features"].shape[:2]) for b in batches)
    return 1.0 - real / float(padded)


def batch_facts(warmup, timed, preset: config.Preset) -> dict:
    """What the timed batches hold: shapes, padding, transcript lengths."""
    longest = max(int(np.max(np.sum(b[1] != config.PAD_ID, axis=1)))
                  for b in timed)
    return {"shapes": sorted({_shape(b) for b in warmup}),
            "padding": padding(timed), "longest_target_tokens": longest,
            "timed_audio_seconds": audio_seconds(timed, preset)}


# --- Model steps ------------------------------------------------------------

def _replay(batches):
    """The batches as a dataset whose batch and time axes are unknown, so
    one trace of the step serves every shape (XLA compiles each)."""
    import tensorflow as tf
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] * min(len(t.shape), 2)
                                + list(t.shape[2:]), t.dtype), batches[0])
    return tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=spec).prefetch(2)


def memory_stats(reset: bool = False) -> Optional[Dict[str, float]]:
    """TensorFlow's GPU allocator, in MiB (None without a GPU)."""
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        return None
    if reset:
        tf.config.experimental.reset_memory_stats(GPU)
    info = tf.config.experimental.get_memory_info(GPU)
    return {k: v / 2**20 for k, v in info.items()}


def _steps(step, batches, n: int) -> Tuple[float, float]:
    """(wall seconds, last loss) of n train steps; reading the loss waits
    for the device to finish them."""
    started = time.perf_counter()
    for _ in range(n):
        logs = step(batches)
    loss = float(logs["loss"])
    return time.perf_counter() - started, loss


def measure_precision(preset: config.Preset, precision: str, plan: Plan,
                      warmup, timed) -> dict:
    """Steps/s and audio-s/s of the timed batches under one precision."""
    import tf_keras as keras
    from models import trainer as trainer_lib
    keras.backend.clear_session()
    gc.collect()
    at_start = memory_stats(reset=True)
    keras.utils.set_random_seed(preset.train.seed)  # same initial weights
    train = dataclasses.replace(preset.train, precision=precision,
                                jit_compile=plan.jit_compile)
    trainer = trainer_lib.build_trainer(
        dataclasses.replace(preset, train=train),
        total_steps=len(warmup) + len(timed))
    step = trainer.make_train_function()
    batches = iter(_replay(warmup + timed))
    warm = sum(_steps(step, batches, 1)[0] for _ in warmup)
    elapsed, loss = _steps(step, batches, len(timed))
    peak = memory_stats()
    return {"precision": precision, "jit_compile": plan.jit_compile,
            "steps": len(timed), "seconds": elapsed,
            "steps_per_s": len(timed) / elapsed,
            "audio_s_per_s": audio_seconds(timed, preset) / elapsed,
            "warmup_steps": len(warmup), "warmup_seconds": warm,
            "final_loss": loss,
            "gpu_in_use_at_start_mib": at_start and at_start["current"],
            "gpu_peak_mib": peak and peak["peak"],
            "peak_rss_mb": common.peak_rss_mb()}


# --- Input pipeline (bench_input.py's measure) ------------------------------

def input_rate(preset_name: str, batches: int) -> dict:
    """bench_input's measure over the embedded corpus's ExampleGen and
    Transform output (one in-process Beam worker, as bench_input runs)."""
    from benchmarks import bench_input, bench_scale
    work = tempfile.mkdtemp(prefix="bench-gpu-input-")
    root = os.path.join(work, "run", "pipeline_root")
    bench_scale._in_child(  # pylint: disable=protected-access
        bench_scale.run_child, bench_scale.CORPUS, os.path.join(work, "run"),
        1)
    graph, = glob.glob(os.path.join(root, "Transform", "transform_graph", "*"))
    examples, = glob.glob(os.path.join(root, "LibriSpeechExampleGen",
                                       "examples", "*"))
    return bench_scale._in_child(  # pylint: disable=protected-access
        bench_input.measure_child, graph,
        os.path.join(examples, "Split-train", "*"), preset_name, batches)


def input_phase(plan: Plan, started: float) -> dict:
    """{"input": bench_input's result} or {"input_skipped": why}."""
    if not plan.input_batches:
        return {"input_skipped": "skipped (--quick or --no-input; "
                                 "bench_input.py measures it)"}
    if time.perf_counter() - started > INPUT_DEADLINE_SECONDS:
        return {"input_skipped": "skipped: the model steps took past "
                                 f"{INPUT_DEADLINE_SECONDS:.0f} s"}
    return {"input": input_rate(plan.preset, plan.input_batches)}


# --- Report -----------------------------------------------------------------

def device() -> dict:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"device": "CPU", "machine": common.machine()}
    details = tf.config.experimental.get_device_details(gpus[0])
    return {"device": details.get("device_name", gpus[0].name),
            "compute_capability": details.get("compute_capability"),
            "gpus": len(gpus), "machine": common.machine()}


def rows_of(result: dict) -> List[Tuple[str, str]]:
    shapes = ", ".join(f"{f} frames x {t} tokens"
                       for f, t in result["shapes"])
    rows = [("device", f"{result['device']} (TensorFlow "
                       f"{result['tensorflow']})"),
            ("preset, batch", f"{result['preset']}, {result['batch_size']} "
             "utterances of " + " or ".join(
                 f"{lo:.2f}-{hi:.2f} s" for lo, hi in result["seconds"])),
            ("timed shapes (padded)", f"{shapes}; audio padding "
             f"{result['padding']:.1%}; longest target "
             f"{result['longest_target_tokens']} tokens")]
    for r in result["precisions"]:
        memory = (f"peak GPU {r['gpu_peak_mib']:.0f} MiB"
                  if r["gpu_peak_mib"] is not None
                  else f"peak RSS {r['peak_rss_mb']:.0f} MB")
        xla = "on" if r["jit_compile"] else "off"
        rows.append((f"{r['precision']}, XLA {xla}", (
            f"{r['steps_per_s']:.2f} steps/s, {r['audio_s_per_s']:.0f} "
            f"audio-s/s, {memory}; warm-up {r['warmup_steps']} steps "
            f"{r['warmup_seconds']:.1f} s; loss {r['final_loss']:.3f}")))
    rows.append(("mixed_bfloat16 / float32 steps/s",
                 f"**{result['ratio']:.2f}x**"))
    source = result.get("input")
    rows.append(("input pipeline alone (bench_input.measure_child)", (
        f"{source['audio_s_per_s']:.0f} audio-s/s ({source['preset']}, batch "
        f"{source['batch_size']}, {result['cpu_cores']} cores)") if source
        else result.get("input_skipped", "skipped")))
    return rows


def run(plan: Plan, started: float) -> dict:
    """Both precisions' model steps, then the input phase."""
    import tensorflow as tf
    preset = config.get_preset(plan.preset)
    preset = dataclasses.replace(preset, train=dataclasses.replace(
        preset.train, batch_size=plan.batch_size))
    warmup, timed = draw_batches(plan, preset)
    result = {**device(), "tensorflow": tf.__version__, "preset": plan.preset,
              "batch_size": plan.batch_size,
              "seconds": duration_ranges(plan, preset.model.front_end),
              "cpu_cores": os.cpu_count(),
              **batch_facts(warmup, timed, preset), "precisions": []}
    for precision in PRECISIONS:
        result["precisions"].append(
            measure_precision(preset, precision, plan, warmup, timed))
        print(json.dumps(result["precisions"][-1]), flush=True)
    f32, bf16 = result["precisions"]
    result["ratio"] = bf16["steps_per_s"] / f32["steps_per_s"]
    result.update(input_phase(plan, started))
    result["wall_seconds"] = time.perf_counter() - started
    return result


def notes_for(plan: Plan) -> List[str]:
    buckets = ", ".join(f"{seconds:g}" for seconds in plan.bucket_seconds)
    notes = [f"Synthetic utterances in the length buckets of {buckets} s, "
             "through the trainer's feature path and static-shape batching; "
             "the same batches under both precisions; warm-up steps (XLA "
             "compiles) excluded. Tokens pad to their own ladder of "
             "edges (data.token_edges), not to the frame bucket's edge."]
    if plan.preset != PRESET:
        notes.append(f"--quick: the {plan.preset} preset on small batches "
                     f"(tracing {PRESET}'s step alone takes ~45 s on 2 busy "
                     "cores); a smoke test of the script, not a measurement.")
    return notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CPU smoke test: the ci preset, small batches")
    parser.add_argument("--no-input", action="store_true",
                        help="skip the input-pipeline phase")
    parser.add_argument("--json-out", help="also write the JSON result here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import tensorflow as tf
    if not args.quick and not tf.config.list_physical_devices("GPU"):
        print(NO_GPU.format(tf=tf.__version__), file=sys.stderr)
        return 1
    plan = QUICK if args.quick else FULL
    if args.no_input:
        plan = dataclasses.replace(plan, input_batches=0)
    result = run(plan, started)
    rows, notes = rows_of(result), notes_for(plan)
    if not args.quick:
        common.update_benchmarks_md(SECTION, COMMAND, rows, notes)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))
    for line in [f"{k}: {v}" for k, v in rows] + notes:
        print(line)
    print(f"{result['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
