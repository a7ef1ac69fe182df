"""The data steps at scale: ExampleGen + StatisticsGen + Transform on 1x, 4x
and 16x the embedded corpus, beside the floor this machine allows.

    python benchmarks/bench_scale.py            # 1x, 4x, 16x; 1 and all workers
    python benchmarks/bench_scale.py --quick    # 4x, all workers: ratio to the floor last
    python benchmarks/bench_scale.py --without-16x   # 1x and 4x (1 and all workers) only

The corpora are the embedded corpus repeated under new speaker and chapter
ids (hard links to the same FLACs, new transcript files), so every copy is
ingested as new data. The steps run as the pipeline builds them
(pipeline.create_data_components, pipeline.create_transform) under
LocalDagRunner with a SQLite ML Metadata store, each configuration in its own
process. Per step: wall seconds (ML Metadata's execution times), audio-s/s,
audio-s/s per core, and the peak RSS of the run's process tree while the
step ran; per run: bytes on disk per audio-second of the raw and the
transformed examples.

The floor is measured in the same run, one thread, on the embedded corpus:
decode (soundfile), two log-mel passes (Transform analyses, then transforms)
and two parses (the raw example with its PCM bytes decoded, and the
transformed example), as audio-s/s per core; the floor of the machine is that
times its cores. Beside the raw examples' bytes, the bytes of the same audio
as float32 FloatLists (how examples held it before), GZIP'd the same way.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

CORPUS = os.path.join(common.REPO_ROOT, "data", "embedded-corpus")
STEPS = ("LibriSpeechExampleGen", "StatisticsGen", "Transform")
SECTION = "Data steps at scale (ExampleGen, StatisticsGen, Transform)"
COMMAND = "python benchmarks/bench_scale.py"
# New ids: copy c of speaker s is speaker s + c * ID_STRIDE (likewise chapters).
ID_STRIDE = 100_000
LIBRISPEECH_960_SECONDS = 3.46e6  # train 960 h + dev/test, in audio-seconds


# --- Corpora -----------------------------------------------------------------
def tiled_corpus(dest: str, copies: int) -> str:
    """The embedded corpus `copies` times under new ids (hard links)."""
    for subset in sorted(os.listdir(CORPUS)):
        if not os.path.isdir(os.path.join(CORPUS, subset)):
            continue
        for chapter_dir in sorted(glob.glob(os.path.join(CORPUS, subset, "*",
                                                         "*"))):
            speaker, chapter = map(int, chapter_dir.split(os.sep)[-2:])
            for copy in range(copies):
                s, c = speaker + copy * ID_STRIDE, chapter + copy * ID_STRIDE
                out = os.path.join(dest, subset, str(s), str(c))
                os.makedirs(out)
                old, new = f"{speaker}-{chapter}-", f"{s}-{c}-"
                for name in os.listdir(chapter_dir):
                    path = os.path.join(chapter_dir, name)
                    if name.endswith(".flac"):
                        os.link(path, os.path.join(out, name.replace(old, new)))
                    else:
                        with open(path) as f:
                            text = f.read().replace(old, new)
                        with open(os.path.join(out, f"{s}-{c}.trans.txt"),
                                  "w") as f:
                            f.write(text)
    return dest


# --- The floor -------------------------------------------------------------------
def floor_child() -> Dict:
    """Runs alone in a child process, one thread: seconds per audio-second of
    each piece of the data steps' unavoidable work."""
    import numpy as np
    import soundfile as sf
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from components.librispeech_example_gen import executor, layout
    from models import config, features, pcm, preprocessing

    flacs = sorted(glob.glob(os.path.join(CORPUS, "*", "*", "*", "*.flac")))
    flacs = flacs[::max(1, len(flacs) // 120)]
    audio_seconds = sum(sf.info(f).frames for f in flacs) / config.SAMPLE_RATE

    started = time.perf_counter()
    decoded = [sf.read(f, dtype="float32")[0] for f in flacs]
    decode = time.perf_counter() - started

    utterance = layout.Utterance("1-2-3", 1, 2, "A", "", "", "train-clean")
    raw = [executor.make_example(utterance, layout.Audio(
        x, 16000, 1, False, False), pcm.to_pcm16(x)[0]).SerializeToString()
        for x in decoded]
    spec = {config.AUDIO_PCM_KEY: tf.io.VarLenFeature(tf.string)}

    @tf.function
    def parse_raw(records):
        return preprocessing.raw_audio(tf.io.parse_example(records, spec))

    @tf.function
    def log_mel(audio, lengths):
        return features.log_mel_spectrogram(audio, lengths)

    batches = [raw[i:i + 16] for i in range(0, len(raw), 16)]
    audio = [parse_raw(tf.constant(b)) for b in batches]  # traces too
    started = time.perf_counter()
    audio = [parse_raw(tf.constant(b)) for b in batches]
    parse = time.perf_counter() - started
    mels = [log_mel(*a) for a in audio]
    started = time.perf_counter()
    mels = [log_mel(*a) for a in audio]
    mel = time.perf_counter() - started

    transformed = []
    for m, n in mels:
        for row, frames in zip(m.numpy(), n.numpy()):
            transformed.append(tf.train.Example(features=tf.train.Features(
                feature={config.LOG_MEL_KEY: tf.train.Feature(
                    float_list=tf.train.FloatList(
                        value=row[:frames].ravel()))})).SerializeToString())
    out_spec = {config.LOG_MEL_KEY: tf.io.VarLenFeature(tf.float32)}
    parse_out = tf.function(lambda r: tf.io.parse_example(r, out_spec))
    chunks = [transformed[i:i + 16] for i in range(0, len(transformed), 16)]
    parse_out(tf.constant(chunks[0]))
    started = time.perf_counter()
    for chunk in chunks:
        parse_out(tf.constant(chunk))
    parse_transformed = time.perf_counter() - started

    # What the raw examples would hold as float32 FloatLists, GZIP'd.
    import zlib
    floats = sum(len(zlib.compress(tf.train.FloatList(
        value=x).SerializeToString(), 6)) for x in decoded)
    flac_bytes = sum(os.path.getsize(f) for f in flacs)
    # The share of the train split's audio Transform's analyse pass decodes
    # (preprocessing.stats_rows: every LOG_MEL_STATS_EVERY-th utterance).
    train = sorted(glob.glob(os.path.join(CORPUS, "train*", "*", "*",
                                          "*.flac")))
    frames = np.array([sf.info(f).frames for f in train])
    analysed = preprocessing.stats_rows(tf.constant(
        [os.path.basename(f).split(".")[0] for f in train])).numpy()
    stats_fraction = frames[analysed].sum() / frames.sum()
    return {"audio_seconds": audio_seconds,
            "decode": decode / audio_seconds,
            "log_mel": mel / audio_seconds,
            "parse_raw": parse / audio_seconds,
            "parse_transformed": parse_transformed / audio_seconds,
            "float32_bytes_per_second": floats / audio_seconds,
            "flac_bytes_per_second": flac_bytes / audio_seconds,
            "stats_fraction": stats_fraction,
            "predictor_entropy_bytes_per_second": sum(
                predictor_entropy_bytes(pcm.to_pcm16(x)[0]) for x in decoded)
            / audio_seconds}


def predictor_entropy_bytes(samples, block: int = 4096) -> float:
    """Bytes an ideal entropy coder needs for int16 samples after the best
    of FLAC's fixed predictors (orders 1-3: repeated differences, undone by
    cumulative sums, so a TensorFlow graph could decode them), chosen per
    block: a floor under any lossless coding decodable with plain ops."""
    import numpy as np

    total = 0.0
    residuals = [np.asarray(samples, np.int64)]
    for _ in range(3):
        residuals.append(np.diff(residuals[-1], prepend=0))
    for start in range(0, len(samples), block):
        best = None
        for r in residuals[1:]:
            _, counts = np.unique(r[start:start + block], return_counts=True)
            bits = -(counts * np.log2(counts / counts.sum())).sum()
            best = bits if best is None else min(best, bits)
        total += best / 8
    return total


# --- One run of the data steps ----------------------------------------------------
def _tree_rss_mb() -> float:
    """Resident memory of this process and its descendants, in MB."""
    from tools import read_progress
    total = 0
    for pid in read_progress._processes():  # pylint: disable=protected-access
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total / 2**20


class _StepWatcher:
    """The running component (from the runner's log) and the peak RSS of the
    process tree while it ran."""

    def __init__(self):
        import logging
        self.current = None
        self.peak: Dict[str, float] = {}
        watcher = self

        class Handler(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                if message.startswith("Component ") and message.endswith(
                        " is running."):
                    watcher.current = message.split()[1]
                elif message.endswith(" is finished."):
                    watcher.current = None

        root = logging.getLogger()
        for handler in root.handlers:  # absl's: only warnings to stderr
            handler.setLevel(logging.WARNING)
        root.addHandler(Handler(logging.INFO))
        root.setLevel(logging.INFO)
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.wait(0.25):
            node = self.current
            if node:
                self.peak[node] = max(self.peak.get(node, 0.0), _tree_rss_mb())

    def stop(self):
        self._stop.set()


# The pipeline's Transform only analyses (the Trainer computes the features
# on the fly); this one also materialises them, as a classic TFX Transform
# does, to time the transform pass apart.
MATERIALISED = "TransformMaterialised"


def run_child(data_root: str, work_dir: str, workers: int,
              passes: bool = False) -> Dict:
    """Runs alone in a child process: the data steps, as the pipeline wires
    them, with `workers` Beam worker processes; with `passes`, also a
    Transform that materialises the features of every split, so that the
    analyse and transform passes are timed apart."""
    import logging

    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from pipeline import beam, local_runner
    from pipeline import pipeline as pipeline_def
    from pipeline.options import RunOptions
    from tools import metadata

    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.get_absl_handler().setLevel(logging.WARNING)
    options = RunOptions.resolve(pipeline_name="bench-scale",
                                 enable_cache=False)
    data = pipeline_def.create_data_components(data_root, options)
    transform = pipeline_def.create_transform(options, data)
    components = [data.example_gen, data.schema_gen, data.statistics_gen,
                  transform]
    if passes:
        components.append(tfx.components.Transform(
            examples=data.example_gen.outputs["examples"],
            schema=data.schema_gen.outputs["schema"],
            preprocessing_fn=transform.exec_properties["preprocessing_fn"],
            splits_config=tfx.proto.SplitsConfig(
                analyze=["train"], transform=["train", "eval", "test"]),
            disable_statistics=True).with_id(MATERIALISED))
    paths = local_runner.RunPaths(work_dir)
    p = tfx.dsl.Pipeline(
        pipeline_name=options.pipeline_name,
        pipeline_root=paths.pipeline_root,
        components=components,
        enable_cache=False,
        metadata_connection_config=local_runner.metadata_config(paths),
        beam_pipeline_args=beam.local_args(beam.worker_args(workers)))
    watcher = _StepWatcher()
    wall = local_runner.run(p)
    watcher.stop()

    store = metadata.open_store(paths.metadata_path)
    seconds, outputs = {}, {}
    for node in STEPS + ((MATERIALISED,) if passes else ()):
        execution = metadata.latest_execution(store, options.pipeline_name,
                                              node)
        seconds[node] = (execution.last_update_time_since_epoch
                         - execution.create_time_since_epoch) / 1000
        outputs[node] = metadata.artifacts_by_key(
            store, execution.id, metadata.OUTPUT_EVENTS)
    examples = outputs["LibriSpeechExampleGen"]["examples"][0]
    report = metadata.ingestion_report(examples)

    def bytes_under(uri):
        return sum(os.path.getsize(f) for f in glob.glob(
            os.path.join(uri, "Split-*", "*")))
    materialised = (bytes_under(outputs[MATERIALISED][
        "transformed_examples"][0].uri) if passes else None)
    return {"workers": workers, "wall": wall, "seconds": seconds,
            "peak_rss_mb": watcher.peak,
            "audio_seconds": report["total"]["audio_seconds"],
            "train_fraction": report["splits"]["train"]["audio_seconds"]
            / report["total"]["audio_seconds"],
            "utterances": report["total"]["written"],
            "raw_bytes": bytes_under(examples.uri),
            "transformed_bytes": materialised}


def _child_main(conn, fn, args):
    conn.send(fn(*args))
    conn.close()


def _in_child(fn, *args):
    """fn(*args) in a fresh, non-daemonic process (its Beam runner starts
    worker processes of its own, which a Pool's daemonic workers may not)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, fn, args))
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        raise RuntimeError(f"{fn.__name__} died (exit {child.join() or child.exitcode})") from None
    child.join()
    return result


# --- Report ------------------------------------------------------------------------
def data_steps_rate(run: Dict) -> float:
    return run["audio_seconds"] / sum(run["seconds"][s] for s in STEPS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the 4x corpus with every core only")
    parser.add_argument("--work-dir", help="keep corpora and runs here")
    parser.add_argument("--without-16x", action="store_true",
                        help="skip the 16x corpus (the longest run) and the "
                        "projection drawn from it")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-scale-")
    floor = _in_child(floor_child)
    per_core = 1.0 / (floor["decode"] + 2 * floor["log_mel"]
                      + floor["parse_raw"] + floor["parse_transformed"])
    plan = [(4, cores)] if args.quick else [
        (1, cores), (4, 1), (4, cores)] + (
            [] if args.without_16x else [(16, cores)])
    runs = {}
    for scale, workers in plan:
        corpus = os.path.join(work, f"corpus-{scale}x")
        if not os.path.isdir(corpus):
            tiled_corpus(corpus, scale)
        run_dir = os.path.join(work, f"run-{scale}x-{workers}w")
        shutil.rmtree(run_dir, ignore_errors=True)
        runs[(scale, workers)] = _in_child(run_child, corpus, run_dir,
                                           workers, scale == 4)
        print(json.dumps({"scale": scale, **runs[(scale, workers)]}),
              flush=True)

    rows = [("floor, one thread (decode + 2 log-mel + 2 parses)",
             f"{per_core:.0f} audio-s/s per core; this machine's {cores} "
             f"cores: {per_core * cores:.0f} audio-s/s"),
            ("floor pieces, ms per audio-second", ", ".join(
                f"{k} {1000 * floor[k]:.3f}" for k in (
                    "decode", "log_mel", "parse_raw", "parse_transformed")))]
    for (scale, workers), run in runs.items():
        hours = run["audio_seconds"] / 3600
        label = f"{scale}x ({run['utterances']} utterances, {hours:.2f} h), " \
                f"{workers} worker{'s' if workers > 1 else ''}"
        for step in STEPS:
            rate = run["audio_seconds"] / run["seconds"][step]
            rows.append((f"{label}: {step}", (
                f"{run['seconds'][step]:.1f} s, {rate:.0f} audio-s/s, "
                f"{rate / cores:.0f} per core, peak RSS "
                f"{run['peak_rss_mb'].get(step, 0):.0f} MB")))
        if MATERIALISED in run["seconds"]:
            analyse = run["seconds"]["Transform"]
            both = run["seconds"][MATERIALISED]
            train_seconds = run["audio_seconds"] * run["train_fraction"]
            per_pass = floor["parse_raw"] + floor["log_mel"]
            analysed = train_seconds * floor["stats_fraction"]
            rows.append((f"{label}: Transform's passes", (
                f"analyse (train split; the pipeline's Transform) "
                f"{analyse:.1f} s, of which decoding and log-mel of the "
                f"{100 * floor['stats_fraction']:.0f} % of its audio the "
                "statistics are analysed on, at the floor's one-thread rate, "
                f"{analysed * per_pass / workers:.1f} s; "
                f"transform (every split, materialised) {both - analyse:.1f} "
                f"s more, of which decoding and log-mel "
                f"{run['audio_seconds'] * per_pass / workers:.1f} s, for "
                f"{run['transformed_bytes'] / run['audio_seconds'] / 1e3:.1f} kB "
                "per audio-second of GZIP'd float32 log-mel")))
        rate = data_steps_rate(run)
        rows.append((f"{label}: the three steps",
                     f"{rate:.0f} audio-s/s ({rate / (per_core * cores):.2f} "
                     f"of the floor); raw examples "
                     f"{run['raw_bytes'] / run['audio_seconds'] / 1e3:.1f} kB "
                     "per audio-second"))
    rows.append(("the same audio as float32 FloatLists, GZIP'd",
                 f"{floor['float32_bytes_per_second'] / 1e3:.1f} kB per "
                 "audio-second"))
    rows.append(("lossless bounds on the same audio", (
        f"the source FLACs {floor['flac_bytes_per_second'] / 1e3:.1f} kB per "
        "audio-second; the entropy after the best fixed predictor per 4096 "
        f"samples {floor['predictor_entropy_bytes_per_second'] / 1e3:.1f} kB; "
        f"half of float32's {floor['float32_bytes_per_second'] / 2e3:.1f} "
        "kB")))
    notes = []
    if not args.quick:
        one, all_ = runs[(4, 1)], runs[(4, cores)]
        rows.append((f"4x: {cores} workers / 1 worker, the three steps",
                     f"{data_steps_rate(all_) / data_steps_rate(one):.2f}x"))
    if not args.quick and not args.without_16x:
        small, big = runs[(1, cores)], runs[(16, cores)]
        total = lambda r: sum(r["seconds"][s] for s in STEPS)  # noqa: E731
        rows.append(("16x / 1x time (linear would be 16x)",
                     f"{total(big) / total(small):.1f}x; peak RSS "
                     f"{max(big['peak_rss_mb'].values()):.0f} vs "
                     f"{max(small['peak_rss_mb'].values()):.0f} MB"))
        rate16 = data_steps_rate(big) / cores
        rows.append(("projection: LibriSpeech 960 h on 16 cores", (
            f"{LIBRISPEECH_960_SECONDS / (rate16 * 16) / 60:.0f} minutes at "
            f"{rate16:.0f} audio-s/s per core")))
        notes.append(
            "Projection assumptions: the per-core rate of the 16x run on "
            "this machine holds on a 16-core machine with one Beam worker "
            "per core (pipeline/beam_pool.py's warm workers; an upper "
            "bound: the FnApiRunner's own process, which moves elements "
            "between stages, is one Python thread and already keeps two "
            "workers from scaling linearly here); real "
            "speech's FLACs decode at the same cost per second; disk reads "
            "keep up (about 14 kB/s of FLAC per audio-second per core). "
            "Real speech compresses worse than this synthetic speech, so "
            "the raw examples would take more bytes per second than here.")
    headline = data_steps_rate(runs[(4, cores)]) / (per_core * cores)
    command = COMMAND + (" --without-16x" if args.without_16x else "")
    common.report(rows, headline, quick=args.quick, section=SECTION,
                  command=command, notes=notes)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
