"""The per-run HTML report: rendering (fast) and the real runs' reports (slow)."""

import base64
import json
import os
import re
from html.parser import HTMLParser

import pytest

from tools import report

# A 1x1 PNG, as the Trainer's loss_curve.png stands in.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


class _Tables(HTMLParser):
    """Rows of every table (cell texts), the images and the headings."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.headings = [], [], []
        self._row = self._cell = self._heading = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(dict(attrs))
        elif tag == "h2":
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr":
            self.rows.append(self._row)
        elif tag == "h2":
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading is not None:
            self._heading += data


def _parse(text):
    parser = _Tables()
    parser.feed(text)
    return parser


def _summary(tmp_path, **overrides):
    png = tmp_path / "loss_curve.png"
    png.write_bytes(PNG)
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"steps": 20, "epochs": 3, "history": {
        "loss": [3.7, 3.3, 3.25], "val_loss": [3.5, 3.3, 3.26]}}))
    summary = {
        "run_id": "2026-01-01T00:00:00.1", "preset": "ci",
        "data_root": "/data/<root>", "examples": {"train": 4, "eval": 3},
        "wer": 0.25, "cer": 0.125, "blessed": False, "pushed": False,
        "pushed_model_dir": None, "serving_model_dir": "/srv/model/1",
        "eval_metrics": {"wer": 0.25, "cer": 0.125, "example_count": 3.0,
                         "mean_decoded_length": 12.5, "wer_diff": 0.05},
        "validation": {"ok": False, "failures": [{
            "metric": "wer", "is_diff": True, "value": 0.05,
            "threshold": {}, "message": "wer_diff too high"}]},
        "eval_slices": [
            {"slice": {}, "metrics": {"wer": 0.25, "cer": 0.125,
                                      "example_count": 3.0,
                                      "mean_decoded_length": 12.5,
                                      "wer_diff": 0.05}},
            {"slice": {"duration_bucket": "2-5s"},
             "metrics": {"wer": 0.0, "example_count": 2.0}},
            {"slice": {"duration_bucket": "<2s"},
             "metrics": {"wer": 0.5, "example_count": 1.0}},
            {"slice": {"speaker_id": 7},
             "metrics": {"wer": 0.0, "example_count": 2.0}}],
        "eval_samples": [{"utterance_id": "7-1-0000", "subset": "dev-clean",
                          "reference": "A <B> C", "hypothesis": "A B",
                          "wer": 2 / 3}],
        "test": {"examples": 3, "wer": 0.5, "cer": 0.25, "samples": [],
                 "subsets": {
                     "test-clean": {"examples": 2, "wer": 0.25, "cer": 0.1},
                     "test-other": {"examples": 1, "wer": 1.0, "cer": 0.55}}},
        "loss_curve": str(png), "history": str(history),
        "metadata_path": "/out/metadata.sqlite", "wall_seconds": 12.3,
    }
    summary.update(overrides)
    return summary


def test_report_shows_summary_slices_samples_and_curve(tmp_path):
    html = report.render_report(_summary(tmp_path))
    page = _parse(html)
    assert page.headings[:3] == ["Summary", "Training",
                                 "Evaluation by slice (eval split, TFMA)"]
    cells = {row[0]: row[1:] for row in page.rows if row}
    assert cells["eval WER / CER (TFMA)"] == ["25.0% / 12.5% over 3 utterances"]
    assert cells["blessed"] == ["no"]
    assert cells["failed no-regression check"] == ["wer_diff too high"]
    assert cells["serving model now"] == ["/srv/model/1"]
    assert cells["eval WER vs latest blessed model"] == ["+5.0 points"]
    # WER/CER by slice, one row per slice, with the diff column.
    assert cells["overall"] == ["3", "25.0%", "12.5%", "12.5", "+5.0 pts"]
    assert cells["duration_bucket = <2s"][:2] == ["1", "50.0%"]
    slice_rows = [row[0] for row in page.rows if " = " in row[0]]
    assert slice_rows == ["duration_bucket = <2s", "duration_bucket = 2-5s",
                          "speaker_id = 7"]  # buckets shortest first
    assert cells["speaker_id = 7"][:3] == ["2", "0.0%", "n/a"]
    # Test WER/CER per subset, as LibriSpeech papers report them.
    assert cells["test WER / CER: test-other"] == [
        "100.0% / 55.0% over 1 utterances"]
    # Reference vs hypothesis, with that pair's WER; text is escaped.
    assert cells["7-1-0000"] == ["dev-clean", "A <B> C", "A B", "66.7%"]
    assert "<B>" not in html and "/data/&lt;root&gt;" in html
    # The loss curve is embedded (the page stands alone) with the history.
    (img,) = page.images
    assert img["src"] == "data:image/png;base64," + base64.b64encode(
        PNG).decode()
    assert cells["loss"] == ["3.7000", "3.2500"]


def test_report_without_evaluation_or_curve(tmp_path):
    page = _parse(report.render_report(_summary(
        tmp_path, eval_slices=[], loss_curve=None, history=None,
        validation=None, blessed=None, test=None, eval_samples=None)))
    assert page.images == []
    assert "Evaluation by slice (eval split, TFMA)" in page.headings


def test_write_report_keeps_each_run_and_the_latest(tmp_path):
    first = report.write_report(_summary(tmp_path, run_id="a:1"), str(tmp_path))
    second = report.write_report(_summary(tmp_path, run_id="b:2"), str(tmp_path))
    assert os.path.basename(first) == "a-1.html" != os.path.basename(second)
    assert os.path.isfile(first) and os.path.isfile(second)
    with open(second) as f, open(tmp_path / report.LATEST_REPORT) as g:
        assert f.read() == g.read()


# --- The real runs (tests/gating_runs.py) -------------------------------------
@pytest.mark.slow
def test_run_cli_writes_and_names_the_report(gated_runs):
    summary = gated_runs["summary1"]
    path = summary["report"]
    assert os.path.dirname(path) == os.path.join(gated_runs["output_dir"],
                                                 report.REPORTS_DIR)
    assert os.path.isfile(path)
    # `moonshine-tfx run` prints it last.
    assert gated_runs["run1_stdout"].rstrip().splitlines()[-1] == (
        f"report: {path}")
    with open(path) as f:
        page = _parse(f.read())
    cells = {row[0]: row[1:] for row in page.rows if row}
    assert cells["blessed"] == ["yes"]
    assert cells["overall"][1] == f"{100 * summary['wer']:.1f}%"
    # Slices by subset, speaker and duration bucket, from the TFMA result.
    assert "subset = dev-clean" in cells
    speakers = {k for k in cells if k.startswith("speaker_id = ")}
    buckets = {k for k in cells if k.startswith("duration_bucket = ")}
    assert len(speakers) == 2 and buckets
    from models import config
    assert {b.split(" = ")[1] for b in buckets} <= set(config.DURATION_BUCKETS)
    # The Trainer's loss curve, embedded; eval and test utterances.
    (img,) = page.images
    assert img["src"].startswith("data:image/png;base64,")
    samples = [row for row in page.rows if re.match(r"\d+-\d+-\d+$", row[0])]
    assert len(samples) >= 2 * 3


@pytest.mark.slow
def test_every_run_has_its_own_report(gated_runs):
    paths = [gated_runs[f"summary{i}"]["report"] for i in range(1, 7)]
    assert len(set(paths)) == 6 and all(os.path.isfile(p) for p in paths)
    with open(paths[1]) as f:
        page = _parse(f.read())
    cells = {row[0]: row[1:] for row in page.rows if row}
    assert cells["blessed"] == ["no"]
    assert "failed no-regression check" in cells
    assert cells["pushed"] == ["no"]
    assert cells["serving model now"] == [
        gated_runs["summary1"]["pushed_model_dir"]]
    latest = os.path.join(gated_runs["output_dir"], report.LATEST_REPORT)
    with open(latest) as f, open(paths[-1]) as g:
        assert f.read() == g.read()
