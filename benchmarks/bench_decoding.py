"""Decoding tokens/s: KV cache vs none, and ours vs the official generate().

    python benchmarks/bench_decoding.py --quick   # < 1 minute, prints ours/official last
    python benchmarks/bench_decoding.py           # longer audio and decodes; updates BENCHMARKS.md

1. Cache: the tiny preset (log-mel front end, character vocabulary, random
   weights) decodes N tokens greedily with `models.decoding.greedy_decode`,
   `use_cache=True` (one token per step, self-attention K/V cached, cross K/V
   computed once) and `use_cache=False` (the whole prefix re-run every step),
   each one traced tf.function over the same encoder output; </s> is silenced
   (`common.silence_eos`) so both run exactly N steps. The full run also
   decodes N/4 tokens with the cache, to show the per-token cost stays flat.
2. Official: useful-moonshine 20241016's Keras 3 `Moonshine.generate()`
   (tiny sizes, 32,768-token vocabulary, every weight randomised, </s>
   silenced) on the same audio as our 'waveform' model with the same weights
   copied in (`benchmarks.official`), decoded by `greedy_decode` for the same
   number of tokens (the official cap, 6 per second). Both live in this
   process (the official code imports Keras 3, ours tf_keras) and are timed
   alternately. Decode time = generate time - (preprocessor + encoder) time
   on each side; the token ids are compared.
3. Bound: at batch 1 a decode step reads every decoder weight once, so
   memory bandwidth (a 256 MB NumPy copy, read + write bytes) bounds it at
   decoder bytes / bandwidth per token; reported as ms/token and as how many
   times slower than that bound each implementation runs.

The last line is our cached decode tokens/s over the official's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from models import config  # noqa: E402

PRESET = "tiny"
SEED = 1234
OFFICIAL_TOKENS_PER_SECOND = 6  # generate()'s default cap


def _timed(repeats: int, fn):
    """(best wall seconds, last result) of `repeats` calls after one warm-up."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _decoder_bytes(model) -> int:
    return sum(int(np.prod(w.shape)) * w.dtype.size for w in model.decoder.weights)


def _cache_comparison(n_tokens: int, seconds: float, repeats: int,
                      flat_check: bool) -> dict:
    import tensorflow as tf
    from models import decoding, features, moonshine

    model = moonshine.Moonshine(config.get_preset(PRESET).model)
    common.silence_eos(model)
    audio = common.synthetic_audio(1, seconds)
    mel, frames = features.log_mel_spectrogram(
        tf.constant(audio), tf.constant([audio.shape[1]], tf.int64))
    encoded, lengths = model.encode(mel, frames)
    spec = [tf.TensorSpec([1, None, model.model_config.dim]),
            tf.TensorSpec([1], tf.int32), tf.TensorSpec([], tf.int32)]
    out = {"decoder_bytes": _decoder_bytes(model), "tokens": n_tokens}
    decoded = {}
    for name, use_cache in (("cached", True), ("uncached", False)):
        fn = tf.function(lambda e, l, n, c=use_cache: decoding.greedy_decode(
            model, e, l, n, use_cache=c), input_signature=spec)
        out[name], decoded[name] = _timed(
            repeats, lambda: fn(encoded, lengths, n_tokens).numpy())
        if decoded[name].shape[1] != n_tokens:
            raise RuntimeError(f"{name} decoded {decoded[name].shape[1]} tokens")
        if flat_check and use_cache:
            out["cached_quarter"], _ = _timed(
                repeats, lambda: fn(encoded, lengths, n_tokens // 4).numpy())
        out[f"rss_{name}"] = common.peak_rss_mb()
    out["identical"] = bool(np.array_equal(decoded["cached"], decoded["uncached"]))
    return out


def _official_vs_ours(seconds: float, repeats: int) -> dict:
    """The official Keras 3 model and ours with the same random weights, in
    this process (the official code imports `keras`, Keras 3; ours imports
    `tf_keras`), timed alternately: generate and encode-only on each side."""
    import keras  # Keras 3, beside tf_keras
    import tensorflow as tf
    from benchmarks import official
    from models import decoding, moonshine

    if official.official_model_py() is None:
        raise SystemExit(f"useful-moonshine is not installed: {official.INSTALL_HINT}")
    rng = np.random.default_rng(SEED)
    keras.utils.set_random_seed(SEED)
    theirs = official.build_official(official.load_official_module(),
                                     config.get_preset(PRESET).model)
    weights = official.randomise_official_weights(keras, theirs, rng)
    weights["dec.embedding"][config.EOS_ID] = 0.0  # neither emits </s>
    theirs.decoder.embedding_layer.embeddings.assign(weights["dec.embedding"])
    rss = {"official built": common.peak_rss_mb()}

    cfg = dataclasses.replace(config.get_preset(PRESET).model, frontend="waveform",
                              vocab_size=official.OFFICIAL_VOCAB, dropout=0.0)
    ours = moonshine.Moonshine(cfg)
    official.load_into(ours, weights)
    rss["ours built"] = common.peak_rss_mb()

    audio = common.synthetic_audio(1, seconds)
    n_tokens = int(seconds * OFFICIAL_TOKENS_PER_SECOND)  # generate()'s cap
    lengths = tf.constant([audio.shape[1]])

    def official_encode():
        features = theirs.preprocessor(keras.ops.convert_to_tensor(audio))
        return keras.ops.convert_to_numpy(theirs.encoder(
            features, keras.ops.convert_to_tensor([features.shape[-2]])))

    ours_encode = tf.function(ours.encode)
    ours_generate = tf.function(lambda a, l: decoding.greedy_decode(
        ours, *ours.encode(a, l), n_tokens))
    calls = {
        "official_generate": lambda: theirs.generate(audio)[0, 1:],  # no <s>
        "official_encode": official_encode,
        "ours_generate": lambda: ours_generate(tf.constant(audio), lengths).numpy()[0],
        "ours_encode": lambda: ours_encode(tf.constant(audio), lengths)[0].numpy()}
    theirs.generate(common.synthetic_audio(1, 1.0))  # builds the eager paths
    out = {k: fn() for k, fn in calls.items() if k != "official_generate"}
    best = {k: float("inf") for k in calls}
    for _ in range(repeats):  # alternate, so background load hits both
        for k, fn in calls.items():
            start = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - start)
    rss["after timing"] = common.peak_rss_mb()
    return dict(best, tokens=n_tokens, keras=keras.__version__, rss=rss,
                decoder_bytes=_decoder_bytes(ours),
                same_tokens=int(np.sum(out["official_generate"] == out["ours_generate"])))


def run(n_tokens: int, cache_seconds: float, official_seconds: float,
        repeats: int, flat_check: bool) -> dict:
    bandwidth = common.memory_bandwidth()
    vs = _official_vs_ours(official_seconds, repeats)
    cache = _cache_comparison(n_tokens, cache_seconds, repeats, flat_check)
    bandwidth = max(bandwidth, common.memory_bandwidth())  # least disturbed
    n = vs["tokens"]
    off_decode = (vs["official_generate"] - vs["official_encode"]) / n
    ours_decode = (vs["ours_generate"] - vs["ours_encode"]) / n
    return {"bandwidth": bandwidth, "vs": vs, "cache": cache,
            "official_seconds": official_seconds, "cache_seconds": cache_seconds,
            "official_ms_per_token": 1e3 * off_decode,
            "ours_ms_per_token": 1e3 * ours_decode,
            "ratio": off_decode / ours_decode}


def _rows(r: dict):
    c, bw = r["cache"], r["bandwidth"]
    n = c["tokens"]
    bound_char = 1e3 * c["decoder_bytes"] / bw
    vs = r["vs"]
    bound_32k = 1e3 * vs["decoder_bytes"] / bw
    rows = [
        ("memory bandwidth (256 MB NumPy copy, read + write)", f"{bw / 1e9:.1f} GB/s"),
        (f"tiny (31 symbols): cached, {n} tokens",
         f"{n / c['cached']:.0f} tokens/s ({1e3 * c['cached'] / n:.1f} ms/token)"),
        (f"tiny (31 symbols): uncached, {n} tokens",
         f"{n / c['uncached']:.0f} tokens/s ({1e3 * c['uncached'] / n:.1f} ms/token)"),
        ("cached / uncached", f"**{c['uncached'] / c['cached']:.1f}x**"),
        ("cached and uncached tokens identical", str(c["identical"]))]
    if "cached_quarter" in c:
        q = n // 4
        rows.append((f"tiny cached: ms/token at {q} vs {n} tokens",
                     f"{1e3 * c['cached_quarter'] / q:.1f} vs {1e3 * c['cached'] / n:.1f}"))
    rows += [
        ("tiny (31 symbols): decoder weights; bandwidth bound",
         f"{c['decoder_bytes'] / 1e6:.1f} MB; {bound_char:.2f} ms/token; cached is "
         f"{1e3 * c['cached'] / n / bound_char:.0f}x the bound"),
        (f"vs official (tiny, 32,768 vocab, {r['official_seconds']:.0f} s audio, "
         f"{vs['tokens']} tokens)", "decode = generate - encode"),
        ("official generate(), useful-moonshine 20241016, Keras " + vs["keras"],
         f"{vs['official_generate'] * 1e3:.0f} ms total, encode "
         f"{vs['official_encode'] * 1e3:.0f} ms, "
         f"{r['official_ms_per_token']:.0f} ms/token "
         f"({1e3 / r['official_ms_per_token']:.1f} tokens/s)"),
        ("ours (same weights, greedy_decode with cache)",
         f"{vs['ours_generate'] * 1e3:.0f} ms total, encode "
         f"{vs['ours_encode'] * 1e3:.0f} ms, {r['ours_ms_per_token']:.1f} ms/token "
         f"({1e3 / r['ours_ms_per_token']:.0f} tokens/s)"),
        ("ours / official decode tokens/s", f"**{r['ratio']:.1f}x**"),
        ("token ids equal to official's", f"{vs['same_tokens']}/{vs['tokens']}"),
        ("tiny (32,768 vocab): decoder weights; bandwidth bound",
         f"{vs['decoder_bytes'] / 1e6:.1f} MB; {bound_32k:.2f} ms/token; ours is "
         f"{r['ours_ms_per_token'] / bound_32k:.0f}x, official "
         f"{r['official_ms_per_token'] / bound_32k:.0f}x the bound"),
    ] + [(f"peak RSS, {k}", f"{v:.0f} MB") for k, v in vs["rss"].items()] + [
        ("peak RSS, after cached / uncached (31 symbols)",
         f"{c['rss_cached']:.0f} / {c['rss_uncached']:.0f} MB")]
    return rows


NOTES = (
    "The official generate() runs eagerly (a Python loop of Keras 3 functional "
    "calls, the cache concatenated each step); ours is one traced "
    "tf.while_loop. Both run in this process (the official code imports Keras "
    "3, ours tf_keras), timed alternately; other processes share these 2 "
    "cores, so the ratio moves between runs.",)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        result = run(n_tokens=64, cache_seconds=3.0, official_seconds=3.0,
                     repeats=args.repeats or 1, flat_check=False)
    else:
        result = run(n_tokens=250, cache_seconds=10.0, official_seconds=10.0,
                     repeats=args.repeats or 3, flat_check=True)
    common.report(_rows(result), result["ratio"], quick=args.quick,
                  section="Decoding tokens/s (KV cache, official generate)",
                  command="python benchmarks/bench_decoding.py", notes=NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
