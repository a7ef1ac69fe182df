"""`moonshine-tfx validate-data` (tools/validate_data.py, tools/cli.py).

The slow tests run the real data-validation pipeline (LibriSpeechExampleGen,
StatisticsGen, ImportSchemaGen, ExampleValidator under LocalDagRunner with a
SQLite ML Metadata store) through the CLI on a faulty and a clean
LibriSpeech-layout fixture of a handful of 0.3 s files. The fast tests cover
usage errors, the sample, the verdict and the anomaly reader.
"""

import collections
import json
import os

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2

from components.librispeech_example_gen import layout
from models import config
from tools import cli
from tools import validate_data
from test_librispeech_layout import write_chapter, write_flac

SECONDS = 0.3

# The faulty fixture's train split: one of each fault, two good utterances.
FAULTY_TRAIN_REASONS = {
    layout.INVALID_CHARACTERS: 1,      # 0003 "HELLO, WORLD"
    layout.NON_UTF8_TRANSCRIPT: 1,     # 0004 latin-1 bytes
    layout.MISSING_AUDIO: 1,           # 0005 line without a flac
    layout.MISSING_TRANSCRIPT: 1,      # 0006 flac without a line
    layout.UNREADABLE_AUDIO: 2,        # 0007 garbage, 0008 truncated
    layout.EMPTY_AUDIO: 1,             # 0009 0 bytes
    layout.DUPLICATE_UTTERANCE_ID: 1,  # 0001 repeated on line 9
}
# Which file (suffix of the quarantined path) each fault names.
FAULT_PATHS = {
    layout.INVALID_CHARACTERS: ["103-1240-0003.flac"],
    layout.NON_UTF8_TRANSCRIPT: ["103-1240-0004.flac"],
    layout.MISSING_AUDIO: ["103-1240.trans.txt:5"],
    layout.MISSING_TRANSCRIPT: ["103-1240-0006.flac"],
    layout.UNREADABLE_AUDIO: ["103-1240-0007.flac", "103-1240-0008.flac"],
    layout.EMPTY_AUDIO: ["103-1240-0009.flac"],
    layout.DUPLICATE_UTTERANCE_ID: ["103-1240.trans.txt:9"],
}


def write_faulty_corpus(root: str) -> None:
    """train-clean: 2 good + every fault; dev-clean: a 44.1 kHz stereo file
    (kept: resampled and downmixed); test-clean: 1 good."""
    train = os.path.join(root, "train-clean")
    ch = write_chapter(
        train, 103, 1240,
        {1: "GOOD ONE", 2: "good two",
         3: "HELLO, WORLD",           # invalid_characters
         4: b"CAF\xc9 AU LAIT",       # non_utf8_transcript
         5: "NO AUDIO HERE",          # missing_audio
         6: None,                     # missing_transcript
         7: "GARBAGE", 8: "TRUNCATED", 9: "EMPTY"},
        audio={1: SECONDS, 2: SECONDS, 3: SECONDS, 4: SECONDS, 6: SECONDS})
    with open(os.path.join(ch, "103-1240.trans.txt"), "ab") as f:
        f.write(b"103-1240-0001 GOOD ONE AGAIN\n")  # line 9: duplicate id
    with open(os.path.join(ch, "103-1240-0007.flac"), "wb") as f:
        f.write(b"this is not a flac file")
    whole = os.path.join(ch, "whole.tmp")
    write_flac(whole, 1.0, noise=True)
    with open(whole, "rb") as f:
        data = f.read()
    os.remove(whole)
    with open(os.path.join(ch, "103-1240-0008.flac"), "wb") as f:
        f.write(data[:len(data) // 2])  # truncated mid-stream
    open(os.path.join(ch, "103-1240-0009.flac"), "wb").close()
    write_chapter(os.path.join(root, "dev-clean"), 5, 6, {1: "STEREO ONE"},
                  audio={1: SECONDS}, rate=44_100, channels=2)
    write_chapter(os.path.join(root, "test-clean"), 7, 8, {1: "TEST ONE"},
                  audio={1: SECONDS})


def write_clean_corpus(root: str) -> None:
    write_chapter(os.path.join(root, "train-clean"), 1, 2,
                  {1: "ONE", 2: "TWO"}, audio={1: SECONDS, 2: SECONDS})
    write_chapter(os.path.join(root, "dev-clean"), 3, 4, {1: "THREE"},
                  audio={1: SECONDS})
    write_chapter(os.path.join(root, "test-clean"), 5, 6, {1: "FOUR"},
                  audio={1: SECONDS})


def _load(path):
    with open(path) as f:
        return json.load(f)


# --- Usage errors (exit 2, no traceback) ----------------------------------------
def test_missing_data_root_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["validate-data"])
    assert info.value.code == 2
    assert "--data-root" in capsys.readouterr().err


@pytest.mark.parametrize("extra, says", [
    ([], "no such directory"),
    (["--split", "train"], "SPLIT=GLOB"),
    (["--max-quarantined", "-1"], ">= 0"),
])
def test_usage_errors_exit_2(tmp_path, capsys, extra, says):
    data_root = str(tmp_path / ("missing" if not extra else "data"))
    if extra:
        write_clean_corpus(data_root)
    rc = cli.main(["validate-data", "--data-root", data_root,
                   "--output-dir", str(tmp_path / "out")] + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert says in err and "Traceback" not in err


def test_unmatched_split_is_a_usage_error(tmp_path, capsys):
    write_chapter(str(tmp_path / "train-x"), 1, 2, {1: "A"})
    rc = cli.main(["validate-data", "--data-root", str(tmp_path),
                   "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "split eval" in err and "dev*" in err
    assert not os.path.exists(tmp_path / "out")  # nothing ran


# --- Pure helpers ---------------------------------------------------------------
def test_sample_keeps_all_below_the_limit_and_every_reason_above():
    records = [{"path": f"p{i:03d}", "reason": "a" if i < 150 else "b",
                "message": f"m{i}", "utterance_id": None, "split": "train"}
               for i in range(160)]
    assert len(validate_data.sample_quarantined(records[:99])) == 99
    sample = validate_data.sample_quarantined(records)
    assert len(sample) == validate_data.SAMPLE_LIMIT
    reasons = collections.Counter(r["reason"] for r in sample)
    assert reasons == {"a": 90, "b": 10}  # round-robin: all 10 of b
    assert set(sample[0]) == {"path", "reason", "message", "utterance_id"}


def _report(quarantined, anomalies):
    split = {"quarantined": quarantined, "anomaly_count": len(anomalies),
             "anomalies": [{"feature": f} for f in anomalies]}
    return {"splits": {"train": split},
            "total": {"quarantined": quarantined,
                      "quarantined_by_reason": {"empty_audio": quarantined},
                      "anomaly_count": len(anomalies)}}


def test_verdict():
    assert validate_data.verdict(_report(0, []), 0, 0)[0]
    assert validate_data.verdict(_report(3, []), 3, 0)[0]
    ok, reason = validate_data.verdict(_report(3, ["duration"]), 2, 0)
    assert not ok
    assert "3 quarantined" in reason and "--max-quarantined 2" in reason
    assert "empty_audio=3" in reason
    assert "1 schema anomaly" in reason and "train: duration" in reason
    assert "\n" not in reason


def test_read_anomalies(tmp_path):
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["duration"]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    info.short_description = "Out-of-range values"
    info.description = "Unexpectedly large value: 0.3."
    info.reason.add(type=anomalies_pb2.AnomalyInfo.FLOAT_TYPE_BIG_FLOAT,
                    short_description="Out-of-range values",
                    description="Unexpectedly large value: 0.3.")
    anomalies.dataset_anomaly_info.description = "too few examples"
    os.makedirs(tmp_path / "Split-train")
    (tmp_path / "Split-train" / "SchemaDiff.pb").write_bytes(
        anomalies.SerializeToString())
    (os.makedirs(tmp_path / "Split-eval"))
    (tmp_path / "Split-eval" / "SchemaDiff.pb").write_bytes(b"")

    found = validate_data.read_anomalies(str(tmp_path), "train")
    assert [a["feature"] for a in found] == ["duration", "<dataset>"]
    assert found[0]["severity"] == "ERROR"
    assert found[0]["reasons"][0]["type"] == "FLOAT_TYPE_BIG_FLOAT"
    assert validate_data.read_anomalies(str(tmp_path), "eval") == []
    with pytest.raises(validate_data.ValidationError, match="Split-test"):
        validate_data.read_anomalies(str(tmp_path), "test")


# --- The real pipeline ----------------------------------------------------------
@pytest.mark.slow
def test_faulty_corpus_reports_every_fault(tmp_path, capsys):
    data_root = str(tmp_path / "LibriSpeech")
    write_faulty_corpus(data_root)
    out = str(tmp_path / "validate")

    rc = cli.main(["validate-data", "--data-root", data_root,
                   "--output-dir", out])

    captured = capsys.readouterr()
    assert rc == 1
    fail = [l for l in captured.err.splitlines() if l.startswith("FAIL:")]
    assert len(fail) == 1
    assert "8 quarantined item(s) > --max-quarantined 0" in fail[0]
    assert "unreadable_audio=2" in fail[0]
    assert "train" in captured.out and "missing_audio" in captured.out

    report = _load(os.path.join(out, validate_data.REPORT_FILE))
    assert report["passed"] is False
    assert report["data_root"] == data_root
    splits = report["splits"]
    assert sorted(splits) == ["eval", "test", "train"]
    train, dev, test = splits["train"], splits["eval"], splits["test"]
    # Reconciliation: every item is written or quarantined.
    assert (train["found"], train["written"], train["quarantined"]) == (10, 2, 8)
    assert train["quarantined_by_reason"] == FAULTY_TRAIN_REASONS
    for s in splits.values():
        assert s["found"] == s["written"] + s["quarantined"]
        assert sum(s["quarantined_by_reason"].values()) == s["quarantined"]
        assert s["anomalies"] == [] and s["anomaly_count"] == 0
    assert report["total"]["found"] == 12
    assert report["total"]["quarantined"] == 8
    assert report["total"]["quarantined_by_reason"] == FAULTY_TRAIN_REASONS
    # The stereo 44.1 kHz file is kept, resampled and downmixed.
    assert (dev["found"], dev["written"], dev["quarantined"]) == (1, 1, 0)
    assert (dev["resampled"], dev["downmixed"]) == (1, 1)
    assert (test["written"], test["quarantined"]) == (1, 0)
    # Hours: written audio only.
    assert train["hours"] == pytest.approx(2 * SECONDS / 3600, abs=1e-4)
    assert report["total"]["audio_seconds"] == pytest.approx(4 * SECONDS,
                                                             abs=1e-3)
    # Every quarantined item is in the sample (fewer than 100), named.
    sample = train["quarantined_sample"]
    assert train["quarantined_sample_complete"] is True
    assert len(sample) == 8
    by_reason = collections.defaultdict(list)
    for q in sample:
        assert set(q) == {"path", "reason", "message", "utterance_id"}
        assert q["message"].startswith(q["path"] + ": ")
        by_reason[q["reason"]].append(q)
    for reason, suffixes in FAULT_PATHS.items():
        assert sorted(os.path.basename(q["path"]) for q in
                      by_reason[reason]) == sorted(suffixes), reason
    assert "','" in by_reason[layout.INVALID_CHARACTERS][0]["message"]
    assert "UTF-8" in by_reason[layout.NON_UTF8_TRANSCRIPT][0]["message"]
    assert "0 bytes" in by_reason[layout.EMPTY_AUDIO][0]["message"]
    assert os.path.exists(train["quarantine_file"])

    # A large --max-quarantined passes (the pipeline run is cached).
    report_path = str(tmp_path / "elsewhere" / "report.json")
    rc = cli.main(["validate-data", "--data-root", data_root,
                   "--output-dir", out, "--max-quarantined", "100",
                   "--report", report_path])
    assert rc == 0
    assert "PASS:" in capsys.readouterr().out
    again = _load(report_path)
    assert again["passed"] is True
    assert again["splits"]["train"]["quarantined_by_reason"] == (
        FAULTY_TRAIN_REASONS)
    assert again["examples_uri"] == report["examples_uri"]


@pytest.mark.slow
def test_clean_corpus_passes_and_anomalies_fail(tmp_path, capsys):
    data_root = str(tmp_path / "LibriSpeech")
    write_clean_corpus(data_root)
    out = str(tmp_path / "validate")

    rc = cli.main(["validate-data", "--data-root", data_root,
                   "--output-dir", out])

    assert rc == 0, capsys.readouterr().err
    report = _load(os.path.join(out, validate_data.REPORT_FILE))
    assert report["passed"] is True
    assert report["total"]["quarantined"] == 0
    assert report["total"]["anomaly_count"] == 0
    assert {k: (s["found"], s["written"]) for k, s in
            report["splits"].items()} == {"train": (2, 2), "eval": (1, 1),
                                          "test": (1, 1)}

    # The same data against a schema whose duration domain is too tight:
    # ExampleValidator's anomalies fail the run (ingestion is cached).
    with open(validate_data_schema_file()) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    next(f for f in schema.feature
         if f.name == config.DURATION_KEY).float_domain.max = SECONDS / 2
    tight = str(tmp_path / "tight.pbtxt")
    with open(tight, "w") as f:
        f.write(text_format.MessageToString(schema))
    report = validate_data.validate_data(data_root, out, schema_file=tight)
    assert report["passed"] is False
    assert report["total"]["quarantined"] == 0
    assert report["total"]["anomaly_count"] == 3  # one per split
    for s in report["splits"].values():
        [anomaly] = s["anomalies"]
        assert anomaly["feature"] == config.DURATION_KEY
        assert anomaly["reasons"][0]["type"] == "FLOAT_TYPE_BIG_FLOAT"
    assert "3 schema anomaly(ies) > --max-anomalies 0" in report["reason"]


def validate_data_schema_file() -> str:
    from pipeline import pipeline as pipeline_def
    return pipeline_def.SCHEMA_FILE
