"""Real pipeline runs shared by the gating, lineage and report tests.

Three runs of the pipeline against ONE output dir (one pipeline root, one
SQLite ML Metadata store, one Pusher destination), on a few chapters of the
embedded corpus with the tiny `ci` preset:

1. `moonshine-tfx run --preset ci`: no baseline yet, judged on the absolute
   WER bound alone; blessed and pushed.
2. The same pipeline whose Trainer (`babbling_run_fn`) trains exactly as
   `models.trainer.run_fn` does but exports a model that babbles: every
   transcription ends with BABBLE_WORDS junk words. Its WER is therefore
   provably worse than any real model's: each utterance gets at least
   BABBLE_WORDS - (reference words) extra edits, so WER >= BABBLE_WORDS *
   utterances / reference words - 1 (about 14 on this corpus), while run 1's
   model emits at most config.MAX_TOKENS_PER_SECOND characters per second.
   The absolute bound is lifted (`RUN2_WER_UPPER_BOUND`) so that only the
   no-regression check against the latest blessed model (run 1's, through the
   LatestBlessedModelStrategy Resolver) can refuse it.
3. Run 2 again, unchanged: every component should come from the cache.

`gated_runs` (session scope, imported by conftest) runs them once per pytest
process and records what it saw in `<basetemp>/gated_runs.json`; to iterate
on assertions without re-running the pipeline, point GATED_RUNS_JSON at such
a file. `python tests/gating_runs.py OUT` runs them by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from typing import Dict

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # the Trainer imports BABBLING_RUN_FN from here
    sys.path.insert(0, TESTS_DIR)

# A few whole chapters of each embedded subset, as the e2e test uses.
from test_pipeline_e2e import _tiny_corpus as tiny_corpus  # noqa: E402

BABBLE_WORDS = 100
BABBLE_WORD = "QX"  # in the character vocabulary, in no transcript
BABBLING_RUN_FN = "gating_runs.babbling_run_fn"
RUN2_WER_UPPER_BOUND = 1e6
PIPELINE_NAME = "moonshine-tfx"


def babbling_run_fn(fn_args) -> None:
    """models.trainer.run_fn, exporting a model that appends junk words."""
    import tensorflow as tf
    from models import config
    from models import serving
    from models import trainer

    base = serving.MoonshineServingModule
    babble = " ".join([BABBLE_WORD] * BABBLE_WORDS)

    class BabblingServingModule(base):
        def _transcribe(self, audio, num_samples):
            out = dict(super()._transcribe(audio, num_samples))
            text = out[config.TEXT_OUTPUT_KEY]
            out[config.TEXT_OUTPUT_KEY] = tf.strings.join(
                [text, tf.fill(tf.shape(text), babble)], separator=" ")
            return out

    serving.MoonshineServingModule = BabblingServingModule
    try:
        trainer.run_fn(fn_args)
    finally:
        serving.MoonshineServingModule = base


def run_three_times(data_root: str, output_dir: str) -> Dict:
    """The three runs above; returns what the tests need to know of them."""
    from pipeline import cli
    from pipeline import local_runner
    from pipeline import summary as run_summary

    result: Dict = {"data_root": data_root, "output_dir": output_dir,
                    "seconds": {}}
    started = time.time()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["run", "--preset", "ci", "--data-root", data_root,
                       "--output-dir", output_dir])
    result["run1_rc"], result["run1_stdout"] = rc, stdout.getvalue()
    result["seconds"]["run1"] = time.time() - started
    assert rc == 0, result["run1_stdout"][-3000:]
    result["summary1"] = _read_summary(output_dir)

    for name in ("run2", "run3"):
        started = time.time()
        paths, wall = local_runner.run_local(
            data_root=data_root, output_dir=output_dir, preset_name="ci",
            wer_upper_bound=RUN2_WER_UPPER_BOUND, run_fn=BABBLING_RUN_FN)
        run_summary.finish_run(paths, "ci", data_root, wall)
        result["seconds"][name] = time.time() - started
        result["summary" + name[-1]] = _read_summary(output_dir)
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
    result = run_three_times(data_root, output_dir)
    with open(tmp_path_factory.getbasetemp() / "gated_runs.json", "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    import json
    out = os.path.abspath(sys.argv[1])
    corpus = tiny_corpus(os.path.join(out, "corpus"))
    res = run_three_times(corpus, os.path.join(out, "run"))
    print(json.dumps(res["seconds"]))
