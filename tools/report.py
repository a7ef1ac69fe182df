"""The human report of a pipeline run: one self-contained HTML page.

Rendered from the run summary (`tools/summary.py`, itself read from ML
Metadata and the run's artifacts): what ran on which data, eval/test WER and
CER, the blessing and why, what was pushed and what serves now, the Trainer's
loss curve (embedded, so the page can be mailed or archived alone), WER/CER by
slice (subset, speaker, duration bucket) and a handful of utterances with reference
vs hypothesis.

Each run's page is kept as `<output dir>/reports/<run id>.html`, and the
latest is copied to `<output dir>/report.html`.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
from typing import Dict, Iterable, List, Optional, Sequence

from models import config

REPORTS_DIR = "reports"
LATEST_REPORT = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176b2c; font-weight: bold; }
.bad { color: #a31515; font-weight: bold; }
code, .mono { font-family: ui-monospace, monospace; font-size: 0.92em; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float], digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]],
           numeric: Sequence[int] = ()) -> str:
    """Rows of already-escaped cells; columns in `numeric` right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header)
           + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _verdict(flag: Optional[bool], yes: str, no: str) -> str:
    if flag is None:
        return "n/a"
    return f'<span class="ok">{yes}</span>' if flag else (
        f'<span class="bad">{no}</span>')


def _overview(summary: Dict) -> str:
    m = summary.get("eval_metrics") or {}
    test = summary.get("test") or {}
    rows = [
        ("run", _e(summary.get("run_id"))),
        ("preset", _e(summary.get("preset"))),
        ("data root", f'<span class="mono">{_e(summary.get("data_root"))}</span>'),
        ("examples", _e(", ".join(f"{k}={v}" for k, v in sorted(
            (summary.get("examples") or {}).items())))),
        ("eval WER / CER (TFMA)", f"{_pct(summary.get('wer'))} / "
         f"{_pct(summary.get('cer'))} over "
         f"{_num(m.get('example_count'), 0)} utterances"),
        ("eval mean decoded length", _num(m.get("mean_decoded_length"))
         + " characters"),
    ]
    if "wer_diff" in m:
        rows.append(("eval WER vs latest blessed model",
                     f"{100 * m['wer_diff']:+.1f} points"))
    if test:
        rows.append(("test WER / CER", f"{_pct(test.get('wer'))} / "
                     f"{_pct(test.get('cer'))} over {test.get('examples')} "
                     "held-out utterances"))
    for name, rates in sorted((test.get("subsets") or {}).items()):
        rows.append((f"test WER / CER: {name}", f"{_pct(rates.get('wer'))} / "
                     f"{_pct(rates.get('cer'))} over {rates.get('examples')} "
                     "utterances"))
    rows.append(("blessed", _verdict(summary.get("blessed"), "yes", "no")))
    for failure in (summary.get("validation") or {}).get("failures", []):
        kind = ("no-regression check" if failure.get("is_diff")
                else "absolute bound")
        rows.append((f"failed {kind}", _e(failure.get("message")
                                          or failure.get("metric"))))
    rows.append(("pushed", _verdict(summary.get("pushed"), "yes", "no")
                 + (f' <span class="mono">{_e(summary["pushed_model_dir"])}'
                    "</span>" if summary.get("pushed_model_dir") else "")
                 + (" (this model already serves)"
                    if summary.get("already_serving") else "")))
    rows.append(("serving model now", '<span class="mono">'
                 f'{_e(summary.get("serving_model_dir") or "none")}</span>'))
    rows.append(("ML Metadata store", '<span class="mono">'
                 f'{_e(summary.get("metadata_path"))}</span>'))
    rows.append(("wall time", f"{_e(summary.get('wall_seconds'))} s"))
    if summary.get("note"):
        rows.append(("note", f'<span class="bad">{_e(summary["note"])}</span>'))
    return _table(("", ""), rows)


def _training(summary: Dict) -> str:
    from tfx.dsl.io import fileio  # the pipeline root may be a bucket

    parts = []
    png = summary.get("loss_curve")
    if png and fileio.exists(png):
        with fileio.open(png, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append(f'<img alt="training loss curve" '
                     f'src="data:image/png;base64,{data}" width="560">')
    else:
        parts.append("<p>No loss curve was written.</p>")
    history_path = summary.get("history")
    if history_path and fileio.exists(history_path):
        with fileio.open(history_path) as f:
            history = json.loads(f.read())
        curves = history.get("history", {})
        parts.append(f"<p>{_e(history.get('steps'))} steps in "
                     f"{_e(history.get('epochs'))} epochs.</p>")
        parts.append(_table(
            ("metric", "first epoch", "last epoch"),
            ((_e(name), _num(values[0], 4), _num(values[-1], 4))
             for name, values in sorted(curves.items()) if values),
            numeric=(1, 2)))
    return "\n".join(parts)


def _slice_order(slice_: Dict):
    """Overall first, then by feature; duration buckets shortest first."""
    from models import config

    def value_key(name, value):
        buckets = config.DURATION_BUCKETS
        if name == config.DURATION_BUCKET_KEY and value in buckets:
            return (0, buckets.index(value), "")
        return (1, 0, str(value))

    return sorted((name, value_key(name, value))
                  for name, value in slice_["slice"].items())


def _slice_name(slice_: Dict) -> str:
    if not slice_:
        return "overall"
    return ", ".join(f"{k} = {v}" for k, v in sorted(slice_.items()))


def _slices(summary: Dict) -> str:
    slices = summary.get("eval_slices") or []
    if not slices:
        return "<p>No evaluation result.</p>"
    has_diff = any("wer_diff" in s["metrics"] for s in slices)
    header = ["slice", "utterances", "WER", "CER", "mean decoded length"]
    if has_diff:
        header.append("WER vs baseline")
    rows = []
    for s in sorted(slices, key=_slice_order):
        m = s["metrics"]
        row = [_e(_slice_name(s["slice"])), _num(m.get("example_count"), 0),
               _pct(m.get("wer")), _pct(m.get("cer")),
               _num(m.get("mean_decoded_length"))]
        if has_diff:
            row.append("n/a" if "wer_diff" not in m
                       else f"{100 * m['wer_diff']:+.1f} pts")
        rows.append(row)
    return _table(header, rows, numeric=range(1, len(header)))


def _samples(samples: List[Dict]) -> str:
    if not samples:
        return "<p>None decoded.</p>"
    return _table(
        ("utterance", "subset", "reference", "hypothesis", "WER"),
        ((_e(s["utterance_id"]), _e(s.get("subset")), _e(s["reference"]),
          f'<span class="mono">{_e(s["hypothesis"])}</span>',
          _pct(s.get("wer"))) for s in samples), numeric=(4,))


def _on_device(summary: Dict) -> str:
    """The SavedModel and its TFLite variants, scored alike (TFLiteEvaluator)."""
    tflite = summary.get("tflite")
    if not tflite:
        return "<p>No TFLite evaluation in this run.</p>"
    rows = []
    for variant in (n for n in config.VARIANTS if n in tflite["variants"]):
        v = tflite["variants"][variant]
        gate = ("reference" if "within_tolerance" not in v else _verdict(
            v["within_tolerance"], f"within {100 * v['max_wer_increase']:.1f}"
            " points", f"{100 * v['wer_increase']:+.1f} points"))
        rows.append((_e(variant), _pct(v["wer"]), _pct(v["cer"]),
                     _num(v["bytes"] / 1e6, 2),
                     _num(v.get("tokens_per_audio_second"), 1),
                     _num(v["ms_per_token"], 2),
                     _num(v["ms_per_utterance"], 0),
                     _num(v["real_time_factor"], 3), gate,
                     _verdict(v.get("pushed"), "yes", "no")
                     if "pushed" in v else "n/a"))
    decode = tflite.get("decode") or {}
    vocabulary = (summary.get("vocabulary") or {}).get("name")
    how = ("the CTC head's best path"
           if decode.get("method") == config.CTC_DECODING
           else f"beam width {_e(decode.get('beam_width'))}")
    return (f"<p>{tflite['variants'][config.SAVED_MODEL_VARIANT]['examples']} "
            f"{_e(tflite['split'])} utterances "
            f"({_num(tflite.get('audio_seconds'))} s), one at a time, "
            f"{how} on every variant"
            + (f", vocabulary {_e(vocabulary)}" if vocabulary else "")
            + ".</p>\n"
            + _table(("variant", "WER", "CER", "MB", "tokens/audio-s",
                      "ms/token", "ms/utterance", "real-time factor",
                      "WER gate", "pushed"), rows,
                     numeric=(1, 2, 3, 4, 5, 6, 7)))


def render_report(summary: Dict) -> str:
    """The run's report as one HTML document."""
    scored = "pushed" if summary.get("pushed_model_dir") else "exported"
    sections = [
        ("Summary", _overview(summary)),
        ("Training", _training(summary)),
        ("Evaluation by slice (eval split, TFMA)", _slices(summary)),
        ("On-device variants (TFLite)", _on_device(summary)),
        (f"Eval utterances ({scored} model)",
         _samples(summary.get("eval_samples") or [])),
        (f"Test utterances ({scored} model)",
         _samples((summary.get("test") or {}).get("samples") or [])),
    ]
    body = "\n".join(f"<h2>{_e(title)}</h2>\n{content}"
                     for title, content in sections)
    title = f"moonshine-tfx run {summary.get('run_id') or ''}".strip()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>{_e(title)}</h1>\n{body}\n</body></html>\n")


def report_file_name(run_id: Optional[str]) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id or "run") + ".html"


def write_report(summary: Dict, output_dir: str) -> str:
    """Writes the run's report; returns its path (latest copy: report.html)."""
    reports = os.path.join(output_dir, REPORTS_DIR)
    os.makedirs(reports, exist_ok=True)
    path = os.path.join(reports, report_file_name(summary.get("run_id")))
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_report(summary))
    shutil.copyfile(path, os.path.join(output_dir, LATEST_REPORT))
    return path
