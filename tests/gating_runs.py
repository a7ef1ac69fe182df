"""Real pipeline runs shared by the end-to-end, gating, lineage and report tests.

Six runs of the pipeline against ONE output dir (one pipeline root, one
SQLite ML Metadata store, one Pusher destination), on a few chapters of the
embedded corpus with the tiny `ci` preset:

1. `moonshine-tfx run --preset ci`: no baseline yet, judged on the absolute
   bounds and the output-diversity gate alone; blessed and pushed.
2. The same pipeline whose ModelExporter (`babbling_export_fn`) exports the
   same trained weights as a model that babbles: every transcription ends
   with BABBLE_WORDS junk words, so its WER is provably worse than any real
   model's (at least BABBLE_WORDS - reference words extra edits per
   utterance, about 14 on this corpus, while run 1's model emits at most
   config.MAX_TOKENS_PER_SECOND characters per second). The absolute bounds
   are lifted (`LIFTED_BOUND`) so that only the no-regression check against
   the latest blessed model (run 1's, through the Resolver) can refuse it.
   The Trainer comes from the cache: the export is not training.
3. Run 2 again, unchanged: every component comes from the cache.
4. Run 1 again, unchanged: Trainer and ModelExporter from the cache; the
   Evaluator runs again (its baseline is now that very model) and blesses
   it, and the Pusher does not push it a second time.
5. Run 1 with `--beam-width 1`: decoding changed, so the ModelExporter and
   Evaluator run again, but the Trainer comes from the cache. Its gate is
   lifted (bounds and regression margin) so that it is blessed and pushed
   whatever greedy decoding scores: the served model is then a re-export
   of run 1's training, which is what lineage must show.
6. A broken export of the same weights, with the bounds and the regression
   margin lifted, whose every output is the same text
   (`constant_export_fn`): the output-diversity gate alone refuses it. (An
   empty output is the same gate's other case: test_metrics scores both,
   and test_gating checks that every other preset's bounds refuse it.)

`gated_runs` (session scope, imported by conftest) runs them once per pytest
process and records what it saw in `<basetemp>/gated_runs.json`; to iterate
on assertions without re-running the pipeline, point GATED_RUNS_JSON at such
a file. `python tests/gating_runs.py OUT` runs them by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
from typing import Dict

import pytest

# The runs test gating, caching and lineage, not Beam: their data steps run in
# this process, sparing the worker pool's start in each of the six runs
# (test_beam and test_object_store run pipelines on the pool).
from pipeline.beam import IN_PROCESS_ARGS as BEAM_ARGS

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # the ModelExporter imports the fns from here
    sys.path.insert(0, TESTS_DIR)

BABBLE_WORDS = 100
BABBLE_WORD = "QX"  # in the character vocabulary, in no transcript
CONSTANT_TEXT = "THE SAME WORDS FOR EVERY UTTERANCE"
BABBLING_EXPORT_FN = "gating_runs.babbling_export_fn"
CONSTANT_EXPORT_FN = "gating_runs.constant_export_fn"
LIFTED_BOUND = 1e6
PIPELINE_NAME = "moonshine-tfx"
RUNS = ("run1", "run2", "run3", "run4", "run5", "run6")


def tiny_corpus(dest, per_subset_speakers=2, per_speaker_chapters=1):
    """A few whole chapters of each embedded subset, layout untouched, and
    the corpus manifest (which says the speech is synthetic)."""
    from conftest import EMBEDDED_CORPUS
    os.makedirs(dest, exist_ok=True)
    shutil.copy(os.path.join(EMBEDDED_CORPUS, "manifest.json"), dest)
    for subset in sorted(os.listdir(EMBEDDED_CORPUS)):
        src_subset = os.path.join(EMBEDDED_CORPUS, subset)
        if not os.path.isdir(src_subset):
            continue
        for speaker in sorted(os.listdir(src_subset))[:per_subset_speakers]:
            for chapter in sorted(os.listdir(
                    os.path.join(src_subset, speaker)))[:per_speaker_chapters]:
                shutil.copytree(os.path.join(src_subset, speaker, chapter),
                                os.path.join(dest, subset, speaker, chapter))
    return dest


def _export_with_text(args, text_of) -> None:
    """models.serving.export_fn, with the transcript replaced by
    text_of(decoded text tensor)."""
    from models import config
    from models import serving

    base = serving.MoonshineServingModule

    class Rewritten(base):
        def _transcribe(self, audio, num_samples):
            out = dict(super()._transcribe(audio, num_samples))
            out[config.TEXT_OUTPUT_KEY] = text_of(out[config.TEXT_OUTPUT_KEY])
            return out

    serving.MoonshineServingModule = Rewritten
    try:
        serving.export_fn(args)
    finally:
        serving.MoonshineServingModule = base


def babbling_export_fn(args) -> None:
    """The real export, with BABBLE_WORDS junk words after every text."""
    import tensorflow as tf
    babble = " ".join([BABBLE_WORD] * BABBLE_WORDS)
    _export_with_text(args, lambda text: tf.strings.join(
        [text, tf.fill(tf.shape(text), babble)], separator=" "))


def constant_export_fn(args) -> None:
    """The real export, whose every transcript is CONSTANT_TEXT."""
    import tensorflow as tf
    _export_with_text(args, lambda text: tf.fill(tf.shape(text),
                                                 CONSTANT_TEXT))


def run_all(data_root: str, output_dir: str) -> Dict:
    """The six runs above; returns what the tests need to know of them."""
    from pipeline import local_runner
    from pipeline.options import RunOptions
    from tools import cli
    from tools import summary as run_summary

    result: Dict = {"data_root": data_root, "output_dir": output_dir,
                    "seconds": {}}
    started = time.time()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["run", "--preset", "ci", "--data-root", data_root,
                       "--output-dir", output_dir]
                      + [f"--beam-arg={a}" for a in BEAM_ARGS])
    result["run1_rc"], result["run1_stdout"] = rc, stdout.getvalue()
    result["seconds"]["run1"] = time.time() - started
    assert rc == 0, result["run1_stdout"][-3000:]
    result["summary1"] = _read_summary(output_dir)

    lifted = dict(wer_upper_bound=LIFTED_BOUND, cer_upper_bound=LIFTED_BOUND)
    variants = {
        "run2": RunOptions.resolve("ci", export_fn=BABBLING_EXPORT_FN,
                                   **lifted),
        "run3": RunOptions.resolve("ci", export_fn=BABBLING_EXPORT_FN,
                                   **lifted),
        "run4": RunOptions.resolve("ci"),
        "run5": RunOptions.resolve("ci", beam_width=1,
                                   max_wer_regression=LIFTED_BOUND, **lifted),
        "run6": RunOptions.resolve("ci", export_fn=CONSTANT_EXPORT_FN,
                                   max_wer_regression=LIFTED_BOUND, **lifted),
    }
    for name, options in variants.items():
        started = time.time()
        paths, wall = local_runner.run_local(options, data_root, output_dir,
                                             beam_args=list(BEAM_ARGS))
        run_summary.finish_run(paths, "ci", data_root, wall)
        result["seconds"][name] = time.time() - started
        result["summary" + name[3:]] = _read_summary(output_dir)
    return result


def _read_summary(output_dir: str) -> Dict:
    import json
    with open(os.path.join(output_dir, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def gated_runs(tmp_path_factory):
    import json
    reuse = os.environ.get("GATED_RUNS_JSON")
    if reuse:
        with open(reuse) as f:
            return json.load(f)
    data_root = tiny_corpus(str(tmp_path_factory.mktemp("gating_corpus")))
    output_dir = str(tmp_path_factory.mktemp("gating_run"))
    result = run_all(data_root, output_dir)
    with open(tmp_path_factory.getbasetemp() / "gated_runs.json", "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    import json
    out = os.path.abspath(sys.argv[1])
    corpus = tiny_corpus(os.path.join(out, "corpus"))
    res = run_all(corpus, os.path.join(out, "run"))
    print(json.dumps(res["seconds"]))
