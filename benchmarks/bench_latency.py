"""Latency vs audio length: ours (tiny preset) vs a Whisper-tiny-sized model,
each decoding its own realistic number of tokens for the same speech.

    python benchmarks/bench_latency.py --quick   # < 1 minute, 10 s audio, greedy only
    python benchmarks/bench_latency.py           # 1, 2, 5, 10, 20, 30 s; updates BENCHMARKS.md

Token counts: the transcripts of data/embedded-corpus's dev-clean, test-clean
and test-other (LibriSpeech layout, read with the ExampleGen's own layout
module; durations from the FLAC headers) give the rate of each vocabulary
per audio-second: our 31-symbol characters (`models.tokenizer`) and the
official 32k Moonshine BPE (`models.bpe`). At each length a model decodes
round(rate x seconds) + 1 tokens (the transcript's, then </s>). The
Whisper-tiny-sized model decodes at the 32k-BPE rate: Whisper's GPT-2-style
BPE and Moonshine's give similar counts on English (checked offline on
these transcripts: Whisper's multilingual.tiktoken gives 3.31 tokens per
audio-second, GPT-2's 3.25, Moonshine's 3.50, on 2026-12-01).

Timed end to end, batch 1, all in this process (same TensorFlow runtime and
intra-/inter-op threads), each a traced tf.function from raw 16 kHz audio:
(a) the Whisper-tiny-sized encoder-decoder of `benchmarks/whisper_baseline.py`
    (input padded to 30 s, log-mel, encoder, greedy decoding with a KV cache)
    at the BPE count;
(b) ours, tiny preset, character vocabulary, greedy, at the character count;
(c) ours, tiny preset with the 32k BPE vocabulary
    (`Preset.with_overrides(vocabulary=MOONSHINE_BPE_VOCABULARY)`), greedy,
    at the BPE count;
(d) ours with the preset's default beam (its DecodeConfig: width 4, length
    penalty 1), both vocabularies, each at its own count (not in --quick).
Ours runs the ops of the serving graph (log-mel, the per-bin normalisation
Transform bakes in as constants, encoder, `models.decoding`,
detokenisation), but not the exported `transcribe` signature, which caps
decoding at 25 tokens per second and cannot be told a count. Weights are
random and </s> is silenced (`common.silence_eos`), so every decode runs
exactly its count; the count is checked. All are timed alternately, best of
`repeats`, after one untimed call per length, so background load hits all.

Also reported: encoder-only latency (log-mel precomputed, outside the
timing) and its ratio; the encoder's FLOPs per second of audio (2 per
multiply-add, counted from the shapes) and the fraction of this CPU's
float32 matmul peak (one 2048^3 tf.matmul) it reaches; peak RSS after each
phase. The last line is the greedy end-to-end ratio Whisper / ours with
characters at 10 s, each model at its own token count: characters are the
vocabulary the seed and `make demo` train, and the costlier one for us (~4.6
times the BPE's tokens). The paper reports ~5x less compute than Whisper tiny for
10 s.
"""

from __future__ import annotations

import argparse
import base64
import functools
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
LENGTHS = (1, 2, 5, 10, 20, 30)
HEADLINE_SECONDS = 10
PAPER_RATIO_10S = 5.0
CORPUS = os.path.join(common.REPO_ROOT, "data", "embedded-corpus")
RATE_SUBSETS = ("dev-clean", "test-clean", "test-other")
# The models timed, in the order they are called at each length. Each
# decodes greedily unless named "beam"; "characters" and "bpe" say which
# vocabulary (and so which token count) it decodes.
WHISPER = "whisper"
OURS_CHARACTERS = "ours characters"
OURS_BPE = "ours bpe"
BEAM_CHARACTERS = "ours characters beam"
BEAM_BPE = "ours bpe beam"
OURS_ENCODER = "ours encoder"
WHISPER_ENCODER = "whisper encoder"
# GPT-2's pre-tokeniser, which Whisper's tokenizer uses (whisper/tokenizer.py).
_GPT2_SPLIT = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
               r"""|\s+(?!\S)|\s+""")


def encoder_flops(c: config.ModelConfig, seconds: float) -> float:
    """FLOPs (2 per multiply-add) of our log-mel encoder on `seconds` of audio."""
    frames = 1 + (int(seconds * config.SAMPLE_RATE) - config.WINDOW_SAMPLES
                  ) // config.HOP_SAMPLES
    macs, channels = 0, c.n_mels
    for _ in range(c.conv_layers):
        frames = -(-frames // c.conv_stride)
        macs += frames * c.conv_kernel * channels * c.dim
        channels = c.dim
    per_layer = frames * (4 * c.dim * c.dim + 2 * c.dim * c.ffn_dim) \
        + 2 * frames * frames * c.dim
    return 2.0 * (macs + c.enc_layers * per_layer)


def corpus_transcripts(root: str = CORPUS, subsets=RATE_SUBSETS):
    """[(transcript, seconds)] of the subsets' utterances, read as the
    ExampleGen reads a LibriSpeech tree; seconds from each FLAC header."""
    import soundfile
    from components.librispeech_example_gen import layout

    found = []
    for subset in subsets:
        for chapter in layout.list_subset(os.path.join(root, subset)):
            if isinstance(chapter, layout.Quarantined):
                continue
            for item in layout.scan_chapter(chapter):
                if isinstance(item, layout.Utterance):
                    found.append((item.transcript,
                                  soundfile.info(item.audio_path).duration))
    if not found:
        raise RuntimeError(f"no utterances under {root} {subsets}")
    return found


def token_rates(transcripts) -> dict:
    """Tokens per audio-second of the transcripts: our characters and the
    official 32k BPE (no <s> or </s>)."""
    from models import bpe, tokenizer

    seconds = sum(s for _, s in transcripts)
    return {
        "utterances": len(transcripts), "seconds": seconds,
        "characters": sum(len(tokenizer.encode(t, add_special_tokens=False))
                          for t, _ in transcripts) / seconds,
        "bpe": sum(len(bpe.encode(t, add_special_tokens=False))
                   for t, _ in transcripts) / seconds}


def tiktoken_rate(path: str, transcripts) -> float:
    """Tokens per audio-second with a Whisper tokenizer file (e.g. the
    openai/whisper repository's whisper/assets/multilingual.tiktoken: one
    base64 byte string and its merge rank a line), by tiktoken's algorithm:
    GPT-2's pre-tokeniser, then byte-pair merges lowest rank first; the text
    in lower case, as `bpe.normalize` gives Moonshine's BPE."""
    import regex

    with open(path) as f:
        ranks = {base64.b64decode(token): int(rank)
                 for token, rank in (line.split() for line in f if line.strip())}
    split = regex.compile(_GPT2_SPLIT)
    count = 0
    for text, _ in transcripts:
        for word in split.findall(" ".join(text.lower().split())):
            parts = [bytes([b]) for b in word.encode("utf-8")]
            while len(parts) > 1:
                pairs = [(ranks.get(a + b), i)
                         for i, (a, b) in enumerate(zip(parts, parts[1:]))
                         if a + b in ranks]
                if not pairs:
                    break
                _, i = min(pairs)
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            count += len(parts)
    return count / sum(s for _, s in transcripts)


def tokens_for(rate: float, seconds: float) -> int:
    """A transcript's tokens at `rate` per audio-second, then </s>."""
    return int(round(rate * seconds)) + 1


def _ours(preset: config.Preset, mean: np.ndarray, variance: np.ndarray):
    """-> (model, {decoder: tf.function(audio [1, samples], num_tokens) ->
    (token ids [1, num_tokens], text)}) for greedy and the preset's beam."""
    import tensorflow as tf
    from models import bpe, decoding, features, moonshine, tokenizer

    model = moonshine.Moonshine(preset.model)
    common.silence_eos(model)
    detokenize = (bpe.tf_decode
                  if preset.model.vocabulary == config.MOONSHINE_BPE_VOCABULARY
                  else tokenizer.tf_decode)
    # What Transform's log-mel normalisation is at serving: constants.
    mean = tf.constant(mean, tf.float32)
    inv_std = tf.constant(1.0 / np.sqrt(variance + 1e-5), tf.float32)

    def end_to_end(decode):
        @tf.function(input_signature=[tf.TensorSpec([1, None], tf.float32),
                                      tf.TensorSpec([], tf.int32)])
        def transcribe(audio, num_tokens):
            num_samples = tf.shape(audio, out_type=tf.int64)[1:]
            mel, frames = features.log_mel_spectrogram(audio, num_samples)
            encoded, lengths = model.encode((mel - mean) * inv_std, frames)
            ids = decode(model, encoded, lengths, num_tokens)
            return ids, detokenize(ids)
        return transcribe

    beam = functools.partial(decoding.beam_search_decode,
                             beam_width=preset.decode.beam_width,
                             length_penalty=preset.decode.length_penalty)
    return model, {"greedy": end_to_end(decoding.greedy_decode),
                   "beam": end_to_end(beam)}


def run(lengths, repeats: int, beam: bool = True) -> dict:
    import tensorflow as tf
    from benchmarks import whisper_baseline
    from models import features

    transcripts = corpus_transcripts()
    rates = token_rates(transcripts)
    counts = {s: {"characters": tokens_for(rates["characters"], s),
                  "bpe": tokens_for(rates["bpe"], s)} for s in lengths}
    result = {"lengths": list(lengths), "per_length": {}, "rss": {},
              "rates": rates, "counts": counts, "transcripts": transcripts,
              "beam": beam}
    result["matmul_peak_flops"] = common.matmul_peak_flops()

    start = time.perf_counter()
    characters = config.get_preset(PRESET)
    bpe_preset = characters.with_overrides(
        vocabulary=config.MOONSHINE_BPE_VOCABULARY)
    result["decode"] = characters.decode
    clip = common.synthetic_audio(1, 1.0)
    mel, _ = features.log_mel_spectrogram(tf.constant(clip),
                                          tf.constant([clip.shape[1]], tf.int64))
    mel = mel.numpy()[0]
    norm = (mel.mean(axis=0), mel.var(axis=0))
    model, ours_chars = _ours(characters, *norm)
    _, ours_bpe = _ours(bpe_preset, *norm)
    whisper = whisper_baseline.WhisperTinyLike(
        max_tokens=max(c["bpe"] for c in counts.values()))
    whisper_greedy = tf.function(whisper.greedy, input_signature=[
        tf.TensorSpec([1, None], tf.float32), tf.TensorSpec([], tf.int32)])
    whisper_encode = tf.function(whisper.encode_log_mel, input_signature=[
        tf.TensorSpec([1, whisper_baseline.MEL_FRAMES, config.N_MELS])])
    ours_encode = tf.function(model.encode, input_signature=[
        tf.TensorSpec([1, None, config.N_MELS]), tf.TensorSpec([1], tf.int64)])
    result["build_s"] = time.perf_counter() - start
    result["rss"]["3 models built"] = common.peak_rss_mb()

    c = characters.model
    for s in lengths:
        audio = tf.constant(common.synthetic_audio(1, s))
        n = tf.constant([audio.shape[1]], tf.int64)
        mel, frames = features.log_mel_spectrogram(audio, n)
        mel_30s = whisper.log_mel(audio)
        n_chars, n_bpe = counts[s]["characters"], counts[s]["bpe"]
        calls = {  # name -> (call, tokens it must decode)
            WHISPER: (lambda: whisper_greedy(audio, n_bpe)[None], n_bpe),
            OURS_CHARACTERS: (lambda: ours_chars["greedy"](audio, n_chars)[0],
                              n_chars),
            OURS_BPE: (lambda: ours_bpe["greedy"](audio, n_bpe)[0], n_bpe),
            OURS_ENCODER: (lambda: ours_encode(mel, frames)[0], None),
            WHISPER_ENCODER: (lambda: whisper_encode(mel_30s), None),
        }
        if beam:
            calls[BEAM_CHARACTERS] = (
                lambda: ours_chars["beam"](audio, n_chars)[0], n_chars)
            calls[BEAM_BPE] = (lambda: ours_bpe["beam"](audio, n_bpe)[0], n_bpe)
        times = {k: [] for k in calls}
        # One untimed call each (the first traces), then alternate, so
        # background load hits all.
        for timed in [False] + [True] * repeats:
            for k, (fn, tokens) in calls.items():
                t0 = time.perf_counter()
                out = fn().numpy()
                if timed:
                    times[k].append(time.perf_counter() - t0)
                if tokens is not None and (
                        out.shape[-1] != tokens
                        or (k != WHISPER and np.any(out == config.EOS_ID))):
                    raise RuntimeError(f"{k} decoded {out.shape[-1]} tokens "
                                       f"for {s} s, expected {tokens}")
        best = {k: min(v) for k, v in times.items()}
        flops = encoder_flops(c, s)
        p = dict(best, ours_encoder_flops=flops,
                 flops_ratio=whisper_baseline.encoder_flops() / flops,
                 encoder_ratio=best[WHISPER_ENCODER] / best[OURS_ENCODER])
        p["ratio"] = best[WHISPER] / best[OURS_CHARACTERS]
        p["ratio_bpe"] = best[WHISPER] / best[OURS_BPE]
        p["decode_ms"] = {}
        for k, (_, tokens) in calls.items():
            if tokens is not None:
                encoder = best[WHISPER_ENCODER if k == WHISPER else OURS_ENCODER]
                p["decode_ms"][k] = 1e3 * (best[k] - encoder) / tokens
        result["per_length"][s] = p
        result["rss"][f"after {s} s"] = common.peak_rss_mb()
        print(f"{s:>3} s: whisper {best[WHISPER] * 1e3:.0f} ms ({n_bpe} tokens), "
              f"ours characters {best[OURS_CHARACTERS] * 1e3:.0f} ms "
              f"({n_chars}), ours bpe {best[OURS_BPE] * 1e3:.0f} ms ({n_bpe}); "
              f"ratio {p['ratio']:.2f}x / {p['ratio_bpe']:.2f}x", flush=True)
    # The least disturbed of two peak measurements (start and end; one
    # in --quick, to stay under a minute).
    peak = result["matmul_peak_flops"]
    if len(lengths) > 1:
        peak = max(peak, common.matmul_peak_flops())
    result["matmul_peak_flops"] = peak
    for p in result["per_length"].values():
        p["ours_encoder_peak_fraction"] = (
            p["ours_encoder_flops"] / p[OURS_ENCODER] / peak)
    w_flops = whisper_baseline.encoder_flops()
    last = result["per_length"][lengths[-1]]
    result["whisper_encoder_flops"] = w_flops
    result["whisper_encoder_peak_fraction"] = (
        w_flops / last[WHISPER_ENCODER] / peak)
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def _rows(r: dict, whisper_rates=()):
    peak, rates, d = r["matmul_peak_flops"], r["rates"], r["decode"]
    rows = [("model", f"{PRESET} preset, random weights, log-mel front end; "
             f"{config.VOCAB_SIZE}-symbol characters or the "
             f"{config.MOONSHINE_BPE_VOCAB_SIZE:,}-id Moonshine BPE; "
             "tf.function of the serving graph's ops, batch 1"),
            ("baseline", "Whisper-tiny-sized TF encoder-decoder (4+4 layers, 384 "
             "dims, 6 heads, 1500 frames, 51,865 vocab), input padded to 30 s, "
             "greedy"),
            ("tokens per audio-second (transcripts of "
             f"{' + '.join(RATE_SUBSETS)}, {rates['utterances']} utterances, "
             f"{rates['seconds']:.0f} s)",
             f"characters {rates['characters']:.2f}, 32k BPE {rates['bpe']:.2f}")]
    rows += [(f"check: Whisper's own BPE ({name})",
              f"{rate:.2f} tokens per audio-second") for name, rate in whisper_rates]
    rows += [("tokens decoded", "round(rate x seconds) + 1 (</s>) at the model's "
              "own rate; Whisper at the 32k-BPE rate; </s> silenced, counts "
              "checked"),
             ("our beam (tiny preset's DecodeConfig)",
              f"width {d.beam_width}, length penalty {d.length_penalty:g}"
              + ("" if r["beam"] else " (not run)")),
             ("float32 matmul peak (2048^3 tf.matmul)", f"{peak / 1e9:.1f} GFLOP/s"),
             ("set-up (build 3 models)", f"{r['build_s']:.1f} s")]
    for s in r["lengths"]:
        p, n = r["per_length"][s], r["counts"][s]
        rows.append((f"{s} s: tokens characters / BPE",
                     f"{n['characters']} / {n['bpe']}"))
        rows.append((f"{s} s: greedy end-to-end whisper (BPE) / ours characters",
                     f"{_ms(p[WHISPER])} / {_ms(p[OURS_CHARACTERS])} = "
                     f"**{p['ratio']:.2f}x**"))
        rows.append((f"{s} s: greedy end-to-end whisper (BPE) / ours 32k BPE",
                     f"{_ms(p[WHISPER])} / {_ms(p[OURS_BPE])} = "
                     f"**{p['ratio_bpe']:.2f}x**"))
        if r["beam"]:
            rows.append((f"{s} s: beam {d.beam_width} end-to-end ours characters "
                         "/ 32k BPE; whisper greedy over each",
                         f"{_ms(p[BEAM_CHARACTERS])} / {_ms(p[BEAM_BPE])}; "
                         f"{p[WHISPER] / p[BEAM_CHARACTERS]:.2f}x / "
                         f"{p[WHISPER] / p[BEAM_BPE]:.2f}x"))
        rows.append((f"{s} s: decode ms/token " + " / ".join(p["decode_ms"]),
                     " / ".join(f"{v:.1f}" for v in p["decode_ms"].values())))
        rows.append((f"{s} s: encoder ours / whisper",
                     f"{p[OURS_ENCODER] * 1e3:.1f} ms / "
                     f"{_ms(p[WHISPER_ENCODER])} = {p['encoder_ratio']:.1f}x "
                     f"(FLOPs ratio {p['flops_ratio']:.1f}x)"))
    for s in r["lengths"]:
        p = r["per_length"][s]
        rows.append((f"{s} s: our encoder FLOPs per audio-second, fraction of peak",
                     f"{p['ours_encoder_flops'] / s / 1e9:.2f} GFLOP/s-audio, "
                     f"{100 * p['ours_encoder_peak_fraction']:.0f}%"))
    rows.append(("whisper encoder FLOPs (any length), fraction of peak",
                 f"{r['whisper_encoder_flops'] / 1e9:.1f} GFLOP, "
                 f"{100 * r['whisper_encoder_peak_fraction']:.0f}%"))
    if HEADLINE_SECONDS in r["per_length"]:
        p = r["per_length"][HEADLINE_SECONDS]
        rows.append(("paper: Moonshine tiny vs Whisper tiny compute at 10 s",
                     f"~{PAPER_RATIO_10S:.0f}x; here {p['ratio']:.2f}x greedy "
                     f"latency with characters, {p['ratio_bpe']:.2f}x with the "
                     "32k BPE"))
    rows += [(f"peak RSS {k}", f"{v:.0f} MB") for k, v in r["rss"].items()]
    return rows


def _notes(r: dict):
    rates = r["rates"]
    return (
        "Each model decodes the tokens its vocabulary needs for the same "
        "speech: the rates come from the corpus transcripts (synthetic voices, "
        "pauses included), so characters cost ours "
        f"{rates['characters'] / rates['bpe']:.1f}x the steps of a BPE model. "
        "Whisper decodes at the rate of Moonshine's 32k BPE; its own tokenizer "
        "gives slightly fewer tokens (on the transcripts of 2026-12-01: "
        "multilingual.tiktoken 3.31, GPT-2 3.25, Moonshine's BPE 3.50 per "
        "audio-second; `--whisper-tiktoken PATH` re-counts), so Whisper is "
        "charged ~6% more steps than it would take, a few percent of its time. "
        "Whisper's forced prompt tokens (<|startoftranscript|>, language, task, "
        "no-timestamps) are not charged, in its favour.",
        "Ours is timed as a tf.function of the serving graph's ops, not the "
        "exported signature (which caps decoding at 25 tokens per second): the "
        "exported graph's Transform layer adds its sparse/ragged round trip, "
        "~5 ms at 10 s (7.5 against 2.5 ms for the log-mel, measured once on "
        "2026-12-01), under 1% of these end-to-end times.",
        "Decode ms/token = (end-to-end - encoder) / tokens, so it also carries "
        "the log-mel (and our detokenisation) on each side. The encoder ratio is "
        "the paper's argument (compute that scales with audio length, Whisper's "
        "does not); end to end, the number of decoding steps and their cost "
        "decide the ratio, and our per-step cost grows with the vocabulary (its "
        "output projection) and the beam.",
        "Other processes share these 2 cores; all are timed alternately and the "
        "best of each is kept, but a ratio can still move by tens of percent "
        "between runs.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--whisper-tiktoken", action="append", default=[],
                        metavar="PATH",
                        help="a Whisper tokenizer file (openai/whisper's "
                        "whisper/assets/*.tiktoken) to count the transcripts "
                        "with, as a check of the BPE rate Whisper decodes at")
    args = parser.parse_args(argv)
    lengths = (HEADLINE_SECONDS,) if args.quick else LENGTHS
    # --quick: greedy only, best of 3 (of 1, the ratio moved 0.4-0.7x under
    # load); the beam's traces and decodes would take it past a minute.
    repeats = args.repeats or 3
    result = run(lengths, repeats, beam=not args.quick)
    whisper_rates = [(os.path.basename(path),
                      tiktoken_rate(path, result["transcripts"]))
                     for path in args.whisper_tiktoken]
    common.report(_rows(result, whisper_rates),
                  result["per_length"][HEADLINE_SECONDS]["ratio"],
                  quick=args.quick,
                  section="Inference latency vs audio length (tiny vs Whisper-tiny-sized)",
                  command="python benchmarks/bench_latency.py", notes=_notes(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
