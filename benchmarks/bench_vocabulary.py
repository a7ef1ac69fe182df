"""Characters vs the learned subword vocabulary: decoder steps, latency and WER
of two exported models on the same utterances.

    python benchmarks/bench_vocabulary.py \
        --model characters=outputs/vocab-characters/summary.json \
        --model learned_wordpiece=outputs/vocab-learned/summary.json

Each `--model NAME=PATH` is a run's summary.json (its exported model and its
examples) or an exported model dir (then `--examples-uri` names the
examples). Every model transcribes the same eval utterances (the first
`--utterances` of the split, audio decoded as the Transform graph decodes
it), one at a time as a device does, with the decoding it was exported with
(its beam), as the SavedModel (`transcribe` signature) and as each TFLite
file; the models and variants take turns per utterance, so background load
hits all alike, on `--threads` TensorFlow and interpreter threads. Per model
and variant: WER, CER, decoded tokens per audio-second (decoder steps),
milliseconds per audio-second end to end, and ms per token. The last line is
the first model's SavedModel ms per audio-second over the second's (> 1x:
the second transcribes faster).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import config  # noqa: E402

SPLIT = "eval"
UTTERANCES = 60


def _model(spec: str, examples_uri):
    """NAME=PATH -> (name, exported model dir, examples uri)."""
    name, _, path = spec.partition("=")
    if not path:
        raise SystemExit(f"--model {spec}: expected NAME=PATH")
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        model_dir = summary.get("pushed_model_dir") or summary[
            "exported_model_dir"]
        return name, model_dir, examples_uri or summary["examples_uri"]
    if not examples_uri:
        raise SystemExit(f"--model {spec}: a model dir needs --examples-uri")
    return name, path, examples_uri


def _decoders(model_dir: str, threads: int):
    """{variant: audio -> (text, tokens)}, each decoding as exported."""
    from components.tflite_evaluator import executor
    from models import tflite

    preset = tflite.exported_preset(os.path.join(model_dir, "saved_model.pb"))
    out = {config.SAVED_MODEL_VARIANT: executor.saved_model_decoder(model_dir)}
    for variant, name in config.TFLITE_FILES.items():
        out[variant] = executor.tflite_decoder(os.path.join(model_dir, name),
                                               preset.decode, threads)
    return preset, out


def run(models, utterances: int, threads: int) -> dict:
    from components.tflite_evaluator import executor
    from models import metrics

    split = {}
    decoders, results = {}, {}
    for name, model_dir, examples_uri in models:
        if examples_uri not in split:
            split[examples_uri] = executor.read_split(examples_uri,
                                                      SPLIT)[:utterances]
        preset, decoders[name] = _decoders(model_dir, threads)
        results[name] = {"vocabulary": preset.model.vocabulary,
                         "beam_width": preset.decode.beam_width,
                         "variants": {v: {"refs": [], "hyps": [], "tokens": 0,
                                          "seconds": 0.0}
                                      for v in decoders[name]}}
    clips = {uri: rows for uri, rows in split.items()}
    first = next(iter(clips.values()))
    for name, _, uri in models:
        if [r[0] for r in clips[uri]] != [r[0] for r in first]:
            raise SystemExit("the models' examples hold other utterances")
        for decode in decoders[name].values():
            decode(first[0][2])  # builds kernels: not timed
    audio_seconds = sum(len(r[2]) for r in first) / config.SAMPLE_RATE
    for i, (_, transcript, audio) in enumerate(first):
        for name, _, _ in models:
            for variant, decode in decoders[name].items():
                start = time.perf_counter()
                text, tokens = decode(audio)
                elapsed = time.perf_counter() - start
                r = results[name]["variants"][variant]
                r["refs"].append(transcript)
                r["hyps"].append(text)
                r["tokens"] += tokens
                r["seconds"] += elapsed
        print(f"  {i + 1}/{len(first)} utterances", file=sys.stderr)
    for name in results:
        for variant, r in results[name]["variants"].items():
            refs, hyps = r.pop("refs"), r.pop("hyps")
            r.update(wer=metrics.word_error_rate(refs, hyps),
                     cer=metrics.char_error_rate(refs, hyps),
                     tokens_per_audio_second=r["tokens"] / audio_seconds,
                     ms_per_audio_second=1000 * r["seconds"] / audio_seconds,
                     ms_per_token=1000 * r["seconds"] / max(r["tokens"], 1))
    return {"utterances": len(first), "audio_seconds": audio_seconds,
            "results": results}


def _print(report: dict, threads: int) -> None:
    print(f"{report['utterances']} {SPLIT} utterances, "
          f"{report['audio_seconds']:.1f} audio-s, {threads} thread(s), one "
          "utterance at a time")
    print("| model | vocabulary | variant | WER | CER | tokens/audio-s | "
          "ms/audio-s | ms/token |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, result in report["results"].items():
        for variant in (v for v in config.VARIANTS if v in result["variants"]):
            r = result["variants"][variant]
            print(f"| {name} | {result['vocabulary']} | {variant} | "
                  f"{100 * r['wer']:.1f} % | {100 * r['cer']:.1f} % | "
                  f"{r['tokens_per_audio_second']:.2f} | "
                  f"{r['ms_per_audio_second']:.1f} | {r['ms_per_token']:.2f} |")
    names = list(report["results"])
    if len(names) >= 2:
        a, b = (report["results"][n]["variants"][config.SAVED_MODEL_VARIANT]
                for n in names[:2])
        print(f"SavedModel ms/audio-s {names[0]} / {names[1]}: "
              f"{a['ms_per_audio_second'] / b['ms_per_audio_second']:.2f}x; "
              f"tokens/audio-s {a['tokens_per_audio_second'] / b['tokens_per_audio_second']:.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="NAME=summary.json or NAME=exported model dir")
    parser.add_argument("--examples-uri")
    parser.add_argument("--utterances", type=int, default=UTTERANCES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    models = [_model(m, args.examples_uri) for m in args.model]
    report = run(models, args.utterances, args.threads)
    _print(report, args.threads)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
