"""Latency and decode ms/token: SavedModel vs TFLite float32 vs TFLite int8.

    python benchmarks/bench_tflite.py --quick   # < 1 minute, demo preset, 1 and 2 s
    python benchmarks/bench_tflite.py           # tiny preset, 1, 2, 5, 10, 30 s; updates BENCHMARKS.md

One Moonshine (random weights, </s> silenced with `common.silence_eos`, so
every decode runs to the serving cap of `decoding.max_tokens_for_duration`)
is run three ways, batch 1, from raw 16 kHz audio, with the same weights
and the same per-bin log-mel statistics:
- SavedModel: a loaded SavedModel of the serving graph's ops (log-mel,
  normalisation, encoder, `decoding.greedy_decode`'s tf.while_loop with
  its scatter-written cache); the exported `transcribe` signature itself
  needs a Transform graph, which this benchmark does not analyse;
- TFLite float32 and int8 (dynamic range): the files `models/tflite.py`
  writes, decoded by `LiteModel.greedy_tokens` (the loop and the
  self-attention cache in Python).
TensorFlow's intra- and inter-op threads and the interpreters' num_threads
are all `--threads`. Per length: end-to-end latency, encoder latency, and
decode ms/token = (end to end - encoder) / tokens; best of `repeats`, the
three timed alternately so background load hits all. Also: model bytes
(SavedModel variables, each .tflite file) and whether the float TFLite
tokens equal the SavedModel's. The last line is SavedModel decode ms/token
over TFLite int8's at the length where that is least (> 1x: int8 decodes
faster at every length).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from models import config  # noqa: E402

LENGTHS = (1.0, 2.0, 5.0, 10.0, 30.0)
QUICK_LENGTHS = (1.0, 2.0)
PRESET, QUICK_PRESET = "tiny", "demo"
VARIANTS = ("saved_model", config.TFLITE_FLOAT32, config.TFLITE_INT8)


def _statistics(n_mels: int):
    """Per-bin log-mel (mean, variance) of a synthetic clip: what Transform
    would bake in."""
    import tensorflow as tf
    from models import features
    clip = common.synthetic_audio(1, 2.0)
    mel = features.log_mel_frames(tf.constant(clip), n_mels).numpy()[0]
    return mel.mean(axis=0), mel.var(axis=0)


def _saved_model(model, statistics, directory: str):
    """Saves and loads the serving ops as two signatures: `encode` (as
    TFLite's) and `greedy` (audio -> token ids, decode_cap tokens)."""
    import tensorflow as tf
    from models import decoding, tflite

    encode, _ = tflite.signatures(model, statistics)

    def greedy(audio, max_tokens):
        inputs, lengths = tflite.front_end(model, statistics, audio)
        encoded, encoded_lengths = model.encode(inputs, lengths)
        return decoding.greedy_decode(model, encoded, encoded_lengths,
                                      max_tokens)

    greedy = tf.function(greedy, autograph=False, input_signature=[
        tf.TensorSpec([1, None], tf.float32), tf.TensorSpec([], tf.int32)])
    module = tf.Module()
    module.weights = list(model.weights)
    tf.saved_model.save(module, directory, signatures={
        "encode": encode.get_concrete_function(),
        "greedy": greedy.get_concrete_function()})
    loaded = tf.saved_model.load(directory)
    return loaded, loaded.signatures["encode"], loaded.signatures["greedy"]


def _build(preset_name: str, threads: int, directory: str) -> dict:
    """The model's three runners: {variant: (end to end, encoder)} and the
    bytes of each variant."""
    import tensorflow as tf
    from models import moonshine, tflite

    model = moonshine.Moonshine(config.get_preset(preset_name).model)
    common.silence_eos(model)
    statistics = _statistics(model.model_config.n_mels)
    lite_dir = os.path.join(directory, "tflite")
    tflite.save_signatures(model, statistics, lite_dir)
    runners, sizes = {}, {}
    for variant in VARIANTS[1:]:
        content = tflite.convert(lite_dir, variant, model.model_config.n_mels)
        sizes[variant] = len(content)
        lite = tflite.LiteModel(content, model.model_config.vocabulary,
                                num_threads=threads)
        runners[variant] = (lite.greedy_tokens, lite.encode)
    saved_dir = os.path.join(directory, "saved_model")
    loaded, encode, greedy = _saved_model(model, statistics, saved_dir)
    sizes["saved_model"] = sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(saved_dir) for f in files)
    runners["saved_model"] = (
        lambda a: [int(i) for i in greedy(
            audio=tf.constant(a[None]),
            max_tokens=tf.constant(tflite.decode_cap(len(a))))[
                "output_0"].numpy()[0]],
        lambda a: encode(audio=tf.constant(a[None])))
    return {"runners": runners, "bytes": sizes, "keep": loaded}


def _time_length(runners: dict, seconds: float, repeats: int) -> dict:
    """Best-of-repeats end-to-end and encoder seconds per variant, timed
    alternately after one untimed call each; the tokens of each."""
    from models import tflite
    audio = common.synthetic_audio(1, seconds)[0]
    best = {(v, part): float("inf") for v in runners for part in (0, 1)}
    tokens = {v: runners[v][0](audio) for v in runners}  # warm-up
    for v in runners:
        runners[v][1](audio)
    for _ in range(repeats):
        for v in runners:
            for part in (0, 1):
                start = time.perf_counter()
                runners[v][part](audio)
                best[v, part] = min(best[v, part], time.perf_counter() - start)
    n = tflite.decode_cap(len(audio))
    if any(len(t) != n for t in tokens.values()):
        raise RuntimeError(f"a decode of {seconds} s did not run {n} tokens")
    return {"tokens": n, "same": tokens["saved_model"] == tokens["float32"],
            **{v: {"total": best[v, 0], "encode": best[v, 1],
                   "per_token": (best[v, 0] - best[v, 1]) / n}
               for v in runners}}


def run(preset_name: str, lengths, repeats: int, threads: int) -> dict:
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        built = _build(preset_name, threads, tmp)
        build_s = time.perf_counter() - start
        per_length = {s: _time_length(built["runners"], s, repeats)
                      for s in lengths}
    return {"preset": preset_name, "threads": threads, "build_s": build_s,
            "bytes": built["bytes"], "per_length": per_length,
            "ratio": min(m["saved_model"]["per_token"]
                         / m[config.TFLITE_INT8]["per_token"]
                         for m in per_length.values())}


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


def _rows(r: dict):
    b = r["bytes"]
    rows = [("model", f"{r['preset']} preset, random weights, greedy to the "
             f"serving cap ({config.MAX_TOKENS_PER_SECOND:g} tokens/s); "
             f"{r['threads']} thread(s) everywhere"),
            ("bytes: SavedModel / TFLite float32 / int8",
             f"{b['saved_model']:,} / {b['float32']:,} / {b['int8']:,} "
             f"(int8 = {b['int8'] / b['float32']:.0%} of float32)"),
            ("build + convert (both variants)", f"{r['build_s']:.1f} s")]
    for s, m in r["per_length"].items():
        name = f"{s:g} s ({m['tokens']} tokens)"
        rows.append((f"{name}: end to end, SavedModel / float32 / int8",
                     " / ".join(_ms(m[v]["total"]) for v in VARIANTS)))
        rows.append((f"{name}: encoder", " / ".join(
            _ms(m[v]["encode"]) for v in VARIANTS)))
        rows.append((f"{name}: decode ms/token", " / ".join(
            f"{1e3 * m[v]['per_token']:.2f}" for v in VARIANTS)))
        rows.append((f"{name}: float32 tokens equal the SavedModel's",
                     str(m["same"])))
    rows.append(("SavedModel / TFLite int8 decode ms/token, least over "
                 "lengths",
                 f"**{r['ratio']:.2f}x**"))
    return rows


NOTES = (
    "The TFLite decode step reads the host's self-attention cache, one "
    "input per layer, at a length of a ladder (config."
    "TFLITE_CACHE_FIRST_LENGTH, doubling, at most the segment's cap) masked "
    "from the current position on, and returns only that position's keys "
    "and values for the host to store; its cost per token follows the "
    "position, not the cap. The SavedModel's tf.while_loop writes its cache "
    "in place and attends over the prefix. Other processes share these "
    "cores, so ratios move between runs.",
    "Before the per-layer cache (f9e71ea: the whole cap-long cache in and "
    "out of every step, written by a one-hot update), this benchmark run "
    "from f9e71ea's tree on the same machine under the same load "
    "(2026-12-07, load average 5.4) gave decode ms/token SavedModel / "
    "float32 / int8 = 4.54 / 2.45 / 1.32 at 1 s, 4.44 / 2.70 / 1.63 at 2 s, "
    "4.38 / 3.71 / 2.75 at 5 s, 4.96 / 5.56 / 4.17 at 10 s and "
    "10.07 / 19.38 / 16.91 at 30 s (int8 0.60x the SavedModel at 30 s); "
    "on a quiet machine (2026-12-02) 3.26 / 2.18 / 1.12, 3.08 / 2.30 / "
    "1.32, 3.17 / 3.15 / 2.17 and 3.43 / 4.79 / 3.67 at 1, 2, 5 and 10 s "
    "(0.93x at 10 s).",)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        result = run(QUICK_PRESET, QUICK_LENGTHS, args.repeats or 1,
                     args.threads)
    else:
        result = run(PRESET, LENGTHS, args.repeats or 3, args.threads)
    common.report(_rows(result), result["ratio"], quick=args.quick,
                  section="TFLite vs SavedModel (latency, decode ms/token, bytes)",
                  command="python benchmarks/bench_tflite.py", notes=NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
