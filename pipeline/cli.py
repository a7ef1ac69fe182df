"""The `moonshine-tfx` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

# Keras 2 for the whole process, decided before TensorFlow is first imported
# (TFT is Keras-2 only).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_CORPUS = os.path.join(REPO_ROOT, "data", "embedded-corpus")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def _split_patterns(values: Optional[List[str]]) -> Optional[Dict[str, str]]:
    if not values:
        return None
    patterns = {}
    for value in values:
        split, sep, pattern = value.partition("=")
        if not sep or not split or not pattern:
            raise CliError(f"--split expects SPLIT=GLOB (e.g. train=train-clean-100), got {value!r}")
        patterns[split] = pattern
    return patterns


def cmd_run(args) -> int:
    from pipeline import local_runner
    from pipeline import summary as run_summary

    if not os.path.isdir(args.data_root):
        raise CliError(f"--data-root {args.data_root}: no such directory")
    paths, wall = local_runner.run_local(
        data_root=args.data_root, output_dir=args.output_dir,
        preset_name=args.preset, beam_args=args.beam_arg or None,
        split_patterns=_split_patterns(args.split),
        train_steps=args.train_steps, eval_steps=args.eval_steps,
        wer_upper_bound=args.wer_upper_bound,
        max_audio_seconds=args.max_audio_seconds,
        enable_cache=not args.no_cache)
    summary = run_summary.build_summary(paths, args.preset,
                                        os.path.abspath(args.data_root), wall)
    run_summary.write_summary(summary, paths.summary_path)
    print(run_summary.format_summary(summary))
    print(f"summary: {paths.summary_path}")
    return 0


def _read_audio(path: str):
    """16 kHz mono float32 samples of any file soundfile reads."""
    import numpy as np
    import soundfile as sf
    import soxr
    from models import config

    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for bad files
        raise CliError(f"{path}: cannot read audio ({e})") from None
    samples = samples.mean(axis=1)
    if samples.size == 0:
        raise CliError(f"{path}: the file holds no audio samples")
    if not np.all(np.isfinite(samples)):
        raise CliError(f"{path}: audio contains NaN or Inf samples")
    if rate != config.SAMPLE_RATE:
        samples = soxr.resample(samples, rate, config.SAMPLE_RATE)
    if samples.size < config.WINDOW_SAMPLES:
        raise CliError(f"{path}: audio is shorter than one "
                       f"{config.WINDOW_SECONDS * 1000:.0f} ms analysis window")
    return samples.astype("float32")


def cmd_transcribe(args) -> int:
    import tensorflow as tf
    from models import config
    from pipeline.summary import load_model

    try:
        model, model_dir = load_model(args.model)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise CliError(f"--model {args.model}: {e}") from None
    transcribe = model.signatures[config.TRANSCRIBE_SIGNATURE]
    failures = 0
    for path in args.files:
        try:
            samples = _read_audio(path)
        except CliError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        out = transcribe(audio=tf.constant(samples[None, :]),
                         num_samples=tf.constant([samples.size], tf.int64))
        text = out[config.TEXT_OUTPUT_KEY].numpy()[0].decode()
        print(f"{path}\t{text}" if len(args.files) > 1 else text)
    return 1 if failures else 0


def _metadata_path(args) -> str:
    if args.metadata:
        return args.metadata
    from pipeline.local_runner import RunPaths
    return RunPaths(os.path.abspath(args.output_dir)).metadata_path


def cmd_lineage(args) -> int:
    import json
    from pipeline import lineage

    try:
        result = lineage.lineage(_metadata_path(args), args.pushed_model_id)
    except (FileNotFoundError, LookupError) as e:
        raise CliError(str(e)) from None
    print(json.dumps(result, indent=2, default=str) if args.json
          else lineage.format_lineage(result))
    return 0


def cmd_runs(args) -> int:
    import json
    from pipeline import lineage

    try:
        rows = lineage.runs(_metadata_path(args))
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    print(json.dumps(rows, indent=2) if args.json else lineage.format_runs(rows))
    return 0


def _add_store_args(p) -> None:
    p.add_argument("--output-dir", default="outputs/demo",
                   help="a run's output dir (its metadata.sqlite is read)")
    p.add_argument("--metadata", help="path of a SQLite ML Metadata store")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    from models import config

    parser = argparse.ArgumentParser(
        prog="moonshine-tfx",
        description="Train, evaluate and ship Moonshine ASR with TFX.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline locally "
                         "(LocalDagRunner, SQLite ML Metadata)")
    run.add_argument("--data-root", default=EMBEDDED_CORPUS,
                     help="LibriSpeech-layout root (default: the embedded corpus)")
    run.add_argument("--output-dir", default="outputs/run",
                     help="pipeline root, metadata store, pushed model, summary")
    run.add_argument("--preset", default="demo", choices=sorted(config.PRESETS))
    run.add_argument("--beam-arg", action="append", metavar="ARG",
                     help="Beam pipeline arg, repeatable (e.g. "
                     "--beam-arg=--runner=FlinkRunner)")
    run.add_argument("--split", action="append", metavar="SPLIT=GLOB",
                     help="subset glob per split, repeatable (default: "
                     "train*->train, dev*->eval, test*->test)")
    run.add_argument("--train-steps", type=int, default=None)
    run.add_argument("--eval-steps", type=int, default=None)
    run.add_argument("--wer-upper-bound", type=float, default=None,
                     help="bless only below this eval WER (default: preset's)")
    run.add_argument("--max-audio-seconds", type=float,
                     default=config.MAX_AUDIO_SECONDS)
    run.add_argument("--no-cache", action="store_true",
                     help="re-execute every component")
    run.set_defaults(func=cmd_run)

    tr = sub.add_parser("transcribe", help="transcribe audio files with a "
                        "pushed SavedModel")
    tr.add_argument("--model", required=True,
                    help="SavedModel dir or the Pusher's base dir (newest version)")
    tr.add_argument("files", nargs="+", metavar="FILE")
    tr.set_defaults(func=cmd_transcribe)

    li = sub.add_parser("lineage", help="trace a pushed model back to its "
                        "data, code and evaluation (ML Metadata)")
    _add_store_args(li)
    li.add_argument("--pushed-model-id", type=int,
                    help="ML Metadata id of a PushedModel (default: the latest)")
    li.set_defaults(func=cmd_lineage)

    ru = sub.add_parser("runs", help="list pipeline runs: status, WER, pushed")
    _add_store_args(ru)
    ru.set_defaults(func=cmd_runs)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
