"""The `moonshine-tfx` command line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional

# Keras 2 for the whole process, decided before TensorFlow is first imported
# (TFT is Keras-2 only).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ log: its ERROR lines on a CPU host are CUDA plugins
# registering twice, nothing a user can act on; Python errors still raise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# google-cloud packages pulled in by TFX warn about Python 3.10 on every
# import; the pinned stack is 3.10 by design, so the noise helps nobody.
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_CORPUS = os.path.join(REPO_ROOT, "data", "embedded-corpus")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


# --- Options shared by `run` and `compile-kubeflow` -------------------------
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _add_model_args(p, default_preset: str) -> None:
    from models import config

    p.add_argument("--preset", default=default_preset,
                   choices=sorted(config.PRESETS))
    p.add_argument("--vocabulary", choices=sorted(config.VOCABULARY_SIZES),
                   help="the model's output vocabulary, replacing the "
                   f"preset's ({config.CHARACTER_VOCABULARY}): "
                   f"{config.MOONSHINE_BPE_VOCABULARY} is the official "
                   "model's 32k BPE, whose embedding --init-from imports; "
                   f"{config.LEARNED_VOCABULARY} is "
                   f"{config.LEARNED_VOCAB_SIZE} subword pieces that "
                   "Transform learns from the training transcripts")
    p.add_argument("--frontend", choices=config.FRONTENDS,
                   help="the encoder's front end, replacing the preset's "
                   f"({config.LOG_MEL_FRONTEND}): "
                   f"'{config.WAVEFORM_FRONTEND}' is the paper's conv stem "
                   "over raw audio, whose weights --init-from imports")


def _add_run_options(p, default_preset: str) -> None:
    """The flags of pipeline.options.RunOptions (see options_from_args)."""
    from models import config

    _add_model_args(p, default_preset)
    p.add_argument("--beam-width", type=_positive_int, metavar="N",
                   help="beam width of the exported model's decoding, "
                   "replacing the preset's (demo: "
                   f"{config.get_preset(config.DEFAULT_PRESET).decode.beam_width}"
                   "); 1 is greedy, the fastest; changing it re-exports "
                   "and re-evaluates without training again")
    p.add_argument("--decoding", choices=config.DECODING_METHODS,
                   help="how the exported model decodes, replacing the "
                   "preset's (demo: "
                   f"{config.get_preset(config.DEFAULT_PRESET).decode.method}"
                   f"): {config.ATTENTION_DECODING!r}, the decoder token by "
                   f"token, or {config.CTC_DECODING!r}, the encoder's CTC "
                   "head in one pass; re-exports without training again")
    p.add_argument("--split", action="append", metavar="SPLIT=GLOB",
                   help="subset glob per split, repeatable (default: "
                   "train*->train, dev*->eval, test*->test)")
    p.add_argument("--train-steps", type=_positive_int, default=None)
    p.add_argument("--eval-steps", type=_positive_int, default=None)
    p.add_argument("--wer-upper-bound", type=float, default=None,
                   help="bless only if eval WER is at most this (default: "
                   "the preset's)")
    p.add_argument("--cer-upper-bound", type=float, default=None,
                   help="bless only if eval CER is at most this (default: "
                   "the preset's)")
    p.add_argument("--max-wer-regression", type=float,
                   default=config.MAX_WER_REGRESSION, metavar="DELTA",
                   help="bless only if eval WER is at most DELTA above the "
                   "baseline's (the latest blessed model locally, "
                   "--baseline-model on Kubeflow; absolute; default "
                   "%(default)s; without a baseline only the bounds gate)")
    p.add_argument("--max-audio-seconds", type=float,
                   default=config.MAX_AUDIO_SECONDS)
    p.add_argument("--no-cache", action="store_true",
                   help="re-execute every component")
    p.add_argument("--beam-arg", action="append", metavar="ARG",
                   help="Beam pipeline arg of the data steps, repeatable "
                   "(e.g. --beam-arg=--direct_num_workers=8; see README, "
                   "'Beam runners')")


def options_from_args(args, **fields):
    """The RunOptions of parsed `run`/`compile-kubeflow` flags; `fields`
    adds RunOptions fields the command itself decides."""
    from pipeline.options import RunOptions

    try:
        return RunOptions.resolve(
            args.preset, vocabulary=args.vocabulary, frontend=args.frontend,
            beam_width=args.beam_width, decoding=args.decoding,
            split_patterns=_split_patterns(args.split),
            train_steps=args.train_steps, eval_steps=args.eval_steps,
            wer_upper_bound=args.wer_upper_bound,
            cer_upper_bound=args.cer_upper_bound,
            max_wer_regression=args.max_wer_regression,
            max_audio_seconds=args.max_audio_seconds,
            enable_cache=not args.no_cache, **fields)
    except ValueError as e:
        # RunOptions names its fields; the user typed flags.
        message = str(e)
        for field in ("wer_upper_bound", "cer_upper_bound",
                      "max_wer_regression", "max_audio_seconds",
                      "train_steps", "eval_steps"):
            message = message.replace(field, "--" + field.replace("_", "-"))
        raise CliError(message) from None


def _check_init_from(path: Optional[str], preset) -> Optional[str]:
    """--init-from: an absolute path whose weights fit the preset, checked
    now rather than after ingestion and Transform."""
    if not path:
        return None
    from models import moonshine
    from models import weights

    path = path if "://" in path else os.path.abspath(path)
    try:
        weights.plan_import(moonshine.Moonshine(preset.model),
                            weights.read_checkpoint(path))
    except weights.CheckpointError as e:
        raise CliError(f"--init-from: {e}") from None
    return path


def _check_subsets(data_root: str, patterns: Optional[Dict[str, str]]) -> None:
    """Every split's glob matches a subset directory, else a usage error."""
    from components.librispeech_example_gen import layout
    from components.librispeech_example_gen.component import (
        default_input_config)

    for split in default_input_config(patterns).splits:
        try:
            layout.find_subset_dirs(data_root, split.pattern)
        except ValueError as e:
            raise CliError(f"split {split.name}: {e}") from None


def _storage_checked(flag: str, uri: Optional[str]) -> Optional[str]:
    """`uri` when its bucket answers (s3:// and gs:// URIs), else a one-line
    usage error naming the flag and the URI."""
    if uri and "://" in uri:
        from pipeline import storage
        try:
            storage.check_location(uri)
        except storage.StorageError as e:
            raise CliError(f"{flag} {e}") from None
    return uri


def _data_root(data_root: str) -> str:
    """An existing local directory (made absolute) or a bucket URI."""
    if "://" in data_root:
        return _storage_checked("--data-root", data_root.rstrip("/"))
    if not os.path.isdir(data_root):
        raise CliError(f"--data-root {data_root}: no such directory")
    return os.path.abspath(data_root)


# --- Commands ---------------------------------------------------------------
def cmd_run(args) -> int:
    # Every location first, before seconds of imports.
    data_root = _data_root(args.data_root)
    pipeline_root = _storage_checked("--pipeline-root", args.pipeline_root)
    serving_model_dir = _storage_checked("--serving-model-dir",
                                         args.serving_model_dir)
    from pipeline import local_runner
    from tools import console
    from tools import summary as run_summary

    options = options_from_args(args)
    _check_subsets(data_root, options.splits)
    options = options_from_args(
        args, init_from=_check_init_from(args.init_from, options.preset))
    paths = local_runner.RunPaths(os.path.abspath(args.output_dir))
    with console.component_progress(paths.metadata_path,
                                    options.pipeline_name):
        paths, wall = local_runner.run_local(
            options, data_root, args.output_dir, args.beam_arg,
            pipeline_root=pipeline_root, serving_model_dir=serving_model_dir)
    summary = run_summary.finish_run(paths, options.preset.name, data_root,
                                     wall, options.pipeline_name)
    print(run_summary.format_summary(summary))
    print(f"summary: {paths.summary_path}")
    print(f"report: {summary['report']}")
    return 0


def cmd_validate_data(args) -> int:
    from pipeline.options import RunOptions
    from tools import validate_data

    data_root = _data_root(args.data_root)
    if args.max_quarantined < 0 or args.max_anomalies < 0:
        raise CliError("--max-quarantined and --max-anomalies must be >= 0")
    patterns = _split_patterns(args.split)
    _check_subsets(data_root, patterns)
    try:
        options = RunOptions.resolve(
            split_patterns=patterns, max_audio_seconds=args.max_audio_seconds,
            pipeline_name=validate_data.PIPELINE_NAME)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        report = validate_data.validate_data(
            data_root=data_root, output_dir=args.output_dir,
            report_path=args.report, max_quarantined=args.max_quarantined,
            max_anomalies=args.max_anomalies, options=options,
            beam_args=args.beam_arg)
    except validate_data.ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(validate_data.format_report(report))
    print(f"report: {report['report_path']}")
    if report["passed"]:
        print(f"PASS: {report['reason']}")
        return 0
    print(f"FAIL: {report['reason']}", file=sys.stderr)
    return 1


def cmd_transcribe(args) -> int:
    from models import config
    from tools import transcribe

    if not args.window_seconds > 2 * config.SPLIT_FRAME_SECONDS:
        raise CliError(f"--window-seconds must be > "
                       f"{2 * config.SPLIT_FRAME_SECONDS} s")
    _storage_checked("--model", args.model)
    try:
        transcriber = transcribe.transcriber(args.model)
    except transcribe.TranscriptionError as e:
        raise CliError(str(e)) from None
    failures = transcribe.transcribe_files(transcriber, args.files,
                                           args.window_seconds)
    return 1 if failures else 0


def cmd_import_weights(args) -> int:
    from models import config
    from models import weights

    vocabulary = (config.MOONSHINE_BPE_VOCABULARY if args.vocab == "official"
                  else None)
    model_config = config.get_preset(args.preset).with_overrides(
        vocabulary, args.frontend).model
    try:
        report = weights.import_weights(args.source, model_config,
                                        args.output_dir)
    except weights.CheckpointError as e:
        raise CliError(str(e)) from None
    print(report.summary())
    flags = "".join(f" --{name} {value}" for name, value in (
        ("vocabulary", vocabulary), ("frontend", args.frontend)) if value)
    print(f"wrote {os.path.join(args.output_dir, weights.HF_WEIGHTS_FILE)}; "
          f"fine-tune with: moonshine-tfx run --preset {args.preset}"
          f"{flags} --init-from {args.output_dir}")
    return 0


def _metadata_path(args) -> str:
    if args.metadata:
        return args.metadata
    from pipeline.local_runner import RunPaths
    return RunPaths(os.path.abspath(args.output_dir)).metadata_path


def cmd_lineage(args) -> int:
    import json
    from tools import lineage

    try:
        result = lineage.lineage(_metadata_path(args), args.pushed_model_id)
    except (FileNotFoundError, LookupError) as e:
        raise CliError(str(e)) from None
    print(json.dumps(result, indent=2, default=str) if args.json
          else lineage.format_lineage(result))
    return 0


def cmd_runs(args) -> int:
    import json
    from tools import lineage

    try:
        rows = lineage.runs(_metadata_path(args))
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    print(json.dumps(rows, indent=2) if args.json else lineage.format_runs(rows))
    return 0


def cmd_compile_kubeflow(args) -> int:
    from pipeline import kubeflow_runner

    options = options_from_args(args, pipeline_name=args.pipeline_name,
                                trainer_workers=args.workers)
    try:
        path = kubeflow_runner.compile_kubeflow(
            options, image=args.image, pipeline_root=args.pipeline_root,
            output=args.output, data_root=args.data_root,
            resources=kubeflow_runner.TrainerResources(
                gpus=args.gpus, cpu=args.trainer_cpu,
                memory=args.trainer_memory, gpu_type=args.gpu_type),
            beam_args=args.beam_arg, baseline_model_uri=args.baseline_model,
            serving_model_dir=args.serving_model_dir,
            schema_file=args.schema_file)
    except kubeflow_runner.KubeflowConfigError as e:
        raise CliError(str(e)) from None
    print(f"compiled Kubeflow pipeline: {path}")
    if args.workers > 1:
        from pipeline import tfjob
        print(f"Trainer: a TFJob of {args.workers} workers, manifest "
              f"{tfjob.manifest_path(path)}")
    return 0


# --- The parser -------------------------------------------------------------
def _add_store_args(p) -> None:
    p.add_argument("--output-dir", default="outputs/demo",
                   help="a run's output dir (its metadata.sqlite is read)")
    p.add_argument("--metadata", help="path of a SQLite ML Metadata store")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_run(sub) -> None:
    from models import config

    run = sub.add_parser("run", help="run the whole pipeline locally "
                         "(LocalDagRunner, SQLite ML Metadata)")
    run.add_argument("--data-root", default=EMBEDDED_CORPUS,
                     help="LibriSpeech-layout root (default: the embedded corpus)")
    run.add_argument("--output-dir", default="outputs/run",
                     help="pipeline root, metadata store, pushed model, summary")
    run.add_argument("--pipeline-root", metavar="URI",
                     help="keep the artifacts here instead of under "
                     "--output-dir (a local dir, s3:// or gs://; README, "
                     "'Object storage'); metadata and summary stay local")
    run.add_argument("--serving-model-dir", metavar="URI",
                     help="push blessed models here instead of under "
                     "--output-dir (a local dir, s3:// or gs://)")
    run.add_argument("--init-from", metavar="PATH",
                     help="start training from these weights: an "
                     "`import-weights` output dir, or an official checkpoint "
                     "(dir of .weights.h5 files or model.safetensors)")
    _add_run_options(run, config.DEFAULT_PRESET)
    run.set_defaults(func=cmd_run)


def _add_validate_data(sub) -> None:
    from models import config
    from tools import validate_data as vd  # constants only, no TFX

    va = sub.add_parser(
        "validate-data", help="ingest, compute statistics and validate a "
        "LibriSpeech-layout corpus against the schema (no training); "
        "exit 1 when quarantined items or anomalies exceed the thresholds")
    va.add_argument("--data-root", required=True,
                    help="LibriSpeech-layout root")
    va.add_argument("--output-dir", default=vd.DEFAULT_OUTPUT_DIR,
                    help="pipeline root and metadata store")
    va.add_argument("--report", metavar="PATH",
                    help=f"JSON report (default: <output-dir>/{vd.REPORT_FILE})")
    va.add_argument("--max-quarantined", type=int, default=0, metavar="N",
                    help="fail when more items are quarantined (default 0)")
    va.add_argument("--max-anomalies", type=int, default=0, metavar="N",
                    help="fail when ExampleValidator finds more schema "
                    "anomalies (default 0)")
    va.add_argument("--split", action="append", metavar="SPLIT=GLOB",
                    help="subset glob per split, repeatable (default: "
                    "train*->train, dev*->eval, test*->test)")
    va.add_argument("--max-audio-seconds", type=float,
                    default=config.MAX_AUDIO_SECONDS)
    va.add_argument("--beam-arg", action="append", metavar="ARG",
                    help="Beam pipeline arg, repeatable")
    va.set_defaults(func=cmd_validate_data)


def _add_transcribe(sub) -> None:
    from models import config

    tr = sub.add_parser("transcribe", help="transcribe audio files with a "
                        "pushed SavedModel or its TFLite file")
    tr.add_argument("--model", required=True,
                    help="SavedModel dir, the Pusher's base dir (newest "
                    f"version), or a {config.TFLITE_SUFFIX} file beside it "
                    "(greedy decoding)")
    tr.add_argument("--window-seconds", type=float,
                    default=config.TRANSCRIBE_WINDOW_SECONDS,
                    help="longer audio is split at pauses into segments of "
                    "at most this length and the texts joined (default "
                    "%(default)s)")
    tr.add_argument("files", nargs="+", metavar="FILE")
    tr.set_defaults(func=cmd_transcribe)


def _add_import_weights(sub) -> None:
    from models import config
    from models import weights as mw  # constants only, no TensorFlow

    im = sub.add_parser(
        "import-weights", help="convert an official Moonshine checkpoint "
        "(useful-moonshine .weights.h5 files or Hugging Face "
        "model.safetensors) for a preset, for `run --init-from`")
    im.add_argument("source", help="dir of the official "
                    f"{', '.join(mw.KERAS_WEIGHTS_FILES)}, or a "
                    f"{mw.HF_WEIGHTS_FILE} file or dir")
    im.add_argument("--preset", default="tiny", choices=sorted(config.PRESETS))
    im.add_argument("--output-dir", required=True,
                    help=f"gets {mw.HF_WEIGHTS_FILE} and "
                    f"{mw.IMPORT_REPORT_FILE}")
    im.add_argument("--frontend", choices=config.FRONTENDS,
                    help="override the preset's front end (the official "
                    f"model's is '{config.WAVEFORM_FRONTEND}'; pass the same "
                    "to `run`)")
    im.add_argument("--vocab", choices=("characters", "official"),
                    default="characters",
                    help="'characters': everything but the token embedding "
                    "(and output layer, tied to it) is imported; 'official': "
                    "the 32k BPE embedding too, for `run --vocabulary "
                    f"{config.MOONSHINE_BPE_VOCABULARY}`")
    im.set_defaults(func=cmd_import_weights)


def _add_lineage_and_runs(sub) -> None:
    li = sub.add_parser("lineage", help="trace a pushed model back to its "
                        "data, code and evaluation (ML Metadata)")
    _add_store_args(li)
    li.add_argument("--pushed-model-id", type=int,
                    help="ML Metadata id of a PushedModel (default: the latest)")
    li.set_defaults(func=cmd_lineage)

    ru = sub.add_parser("runs", help="list pipeline runs: status, WER, pushed")
    _add_store_args(ru)
    ru.set_defaults(func=cmd_runs)


def _add_compile_kubeflow(sub) -> None:
    from pipeline import kubeflow_runner as kfr  # constants only, no TFX

    kf = sub.add_parser(
        "compile-kubeflow", help="compile the pipeline for Kubeflow Pipelines "
        "v2 / Vertex AI (KubeflowV2DagRunner); does not submit")
    kf.add_argument("--image", required=True,
                    help="the pipeline image built from the Dockerfile "
                    "(REGISTRY/moonshine-tfx:TAG); every component runs it")
    kf.add_argument("--pipeline-root", required=True, metavar="URI",
                    help="gs://... or s3://... root of every artifact")
    kf.add_argument("--output", default="pipeline.json",
                    help="pipeline.json: PipelineJob (Vertex AI); "
                    "pipeline.yaml: PipelineSpec (KFP UI / kfp client)")
    kf.add_argument("--data-root", metavar="URI",
                    help="LibriSpeech-layout root (gs://, s3://, or an "
                    "absolute path in the image; default: the image's "
                    f"embedded corpus, {kfr.IMAGE_EMBEDDED_CORPUS})")
    kf.add_argument("--pipeline-name", default=None,
                    help="default: moonshine-tfx")
    kf.add_argument("--gpus", type=int, default=1,
                    help="GPUs for the Trainer (0: train on CPU); with "
                    "--workers, per worker")
    kf.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                    help="training workers (MultiWorkerMirroredStrategy): "
                    "N > 1 runs the Trainer as a Kubeflow TFJob of N "
                    "replicas and writes its manifest to "
                    "<output>.trainer-tfjob.yaml (needs the Training "
                    "Operator)")
    kf.add_argument("--gpu-type", default=kfr.DEFAULT_GPU_TYPE,
                    help="accelerator resource: nvidia.com/gpu on open-source "
                    "KFP, e.g. NVIDIA_TESLA_A100 on Vertex AI")
    kf.add_argument("--trainer-cpu", default=kfr.DEFAULT_TRAINER_CPU,
                    help="Trainer CPU limit (8, 7.5, 500m)")
    kf.add_argument("--trainer-memory", default=kfr.DEFAULT_TRAINER_MEMORY,
                    help="Trainer memory limit (32G, 32Gi, 512Mi)")
    kf.add_argument("--baseline-model", metavar="URI",
                    help="exported model artifact (holding Format-Serving/) "
                    "imported as the Evaluator's no-regression baseline; "
                    "without it only the absolute bounds gate")
    kf.add_argument("--serving-model-dir", metavar="URI",
                    help="Pusher destination (default: "
                    "<pipeline-root>/<pipeline-name>/serving_model)")
    kf.add_argument("--schema-file", default=kfr.IMAGE_SCHEMA_FILE,
                    help="the curated schema as the pods see it")
    _add_run_options(kf, kfr.DEFAULT_PRESET)
    kf.set_defaults(func=cmd_compile_kubeflow)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moonshine-tfx",
        description="Train, evaluate and ship Moonshine ASR with TFX.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_validate_data, _add_transcribe,
                _add_import_weights, _add_lineage_and_runs,
                _add_compile_kubeflow):
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """The command line (argv None: sys.argv, as the console script and
    `python -m tools.cli` call it; a list: a call from Python)."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except Exception:  # pylint: disable=broad-except
        if argv is not None or "tensorflow_io" not in sys.modules:
            raise
        import traceback
        traceback.print_exc()
        code = 1
    if argv is None and "pipeline.storage" in sys.modules:
        # After s3:// use the interpreter's own exit would abort (status
        # 134): the process ends here, with this status, instead.
        sys.modules["pipeline.storage"].exit_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
