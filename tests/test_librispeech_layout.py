"""LibriSpeech layout: scanning, transcript normalisation, audio, quarantine.

Fast and pure Python: fixtures are LibriSpeech-layout trees written in
tmp_path with soundfile. `write_flac` and `write_chapter` are reused by
tests/test_librispeech_example_gen.py.
"""

import collections
import os
from typing import Dict, Optional, Union

import numpy as np
import pytest
import soundfile as sf
import soxr

import librispeech_oracle
from components.librispeech_example_gen import layout
from models import config

# Resampling tolerance: our 16 kHz output against soxr.resample (HQ) applied
# by hand to the same decoded samples. Both run the same float32 soxr code, so
# the difference is rounding only.
RESAMPLE_ATOL = 1e-6


def write_flac(path: str, seconds: float = 0.5, rate: int = config.SAMPLE_RATE,
               channels: int = 1, freq: float = 440.0, noise: bool = False,
               seed: int = 0, subtype: str = "PCM_16") -> np.ndarray:
    """Writes a FLAC (sine, or white noise; 16-bit unless `subtype`) and
    returns its samples."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    if noise:
        data = np.random.default_rng(seed).uniform(-0.3, 0.3, (n, channels))
    else:
        data = np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t)
                         for c in range(channels)], axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, data if channels > 1 else data[:, 0], rate,
             format="FLAC", subtype=subtype)
    return data


def write_chapter(subset_dir: str, speaker: int, chapter: int,
                  lines: Dict[int, Optional[Union[str, bytes]]],
                  audio: Optional[Dict[int, float]] = None,
                  **flac_kwargs) -> str:
    """Writes `<subset>/<spk>/<ch>/` with a transcript line per `lines` entry.

    `lines` maps utterance number -> transcript text (bytes are written
    verbatim; None writes no line). `audio` maps utterance number -> seconds
    (default: every entry of `lines`, 0.5 s each). Returns the chapter dir.
    """
    chapter_dir = os.path.join(subset_dir, str(speaker), str(chapter))
    os.makedirs(chapter_dir, exist_ok=True)
    if audio is None:
        audio = {utt: 0.5 for utt in lines}
    for utt, seconds in audio.items():
        write_flac(os.path.join(chapter_dir,
                                f"{speaker}-{chapter}-{utt:04d}.flac"),
                   seconds, seed=utt, **flac_kwargs)
    with open(os.path.join(chapter_dir, f"{speaker}-{chapter}.trans.txt"),
              "wb") as f:
        for utt, text in lines.items():
            if text is None:
                continue
            if isinstance(text, str):
                text = text.encode("utf-8")
            f.write(f"{speaker}-{chapter}-{utt:04d} ".encode() + text + b"\n")
    return chapter_dir


def ingest(subset_dirs, max_seconds=config.MAX_AUDIO_SECONDS):
    """What the executor does, without Beam: (written, quarantined, found)."""
    utterances, quarantined = librispeech_oracle.scan_subsets(subset_dirs)
    found = len(utterances) + len(quarantined)
    written = []
    for utt in utterances:
        try:
            written.append((utt, layout.load_audio(utt.audio_path,
                                                   max_seconds=max_seconds)))
        except layout.QuarantineError as e:
            quarantined.append(e.to_quarantined(utt.utterance_id, utt.subset))
    return written, quarantined, found


# --- Transcripts ------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("HELLO WORLD", "HELLO WORLD"),
    ("  don\u2019t   stop\tme \r", "DON'T STOP ME"),
    ("\u2018tis the season", "'TIS THE SEASON"),
    ("rock `n roll", "ROCK 'N ROLL"),
])
def test_normalise_transcript(raw, expected):
    assert layout.normalise_transcript(raw) == expected
    assert set(layout.normalise_transcript(raw)) <= set(config.CHARACTERS)


@pytest.mark.parametrize("raw, reason, shown", [
    ("HELLO, WORLD", layout.INVALID_CHARACTERS, "','"),
    ("ROOM 101", layout.INVALID_CHARACTERS, "'0', '1'"),
    ("CAF\u00c9", layout.INVALID_CHARACTERS, "'\u00c9'"),
    ("", layout.EMPTY_TRANSCRIPT, "empty"),
    (" \t ", layout.EMPTY_TRANSCRIPT, "empty"),
])
def test_normalise_transcript_rejects(raw, reason, shown):
    with pytest.raises(layout.QuarantineError) as info:
        layout.normalise_transcript(raw, path="a/b.trans.txt:3")
    assert info.value.reason == reason
    assert "a/b.trans.txt:3" in str(info.value)
    assert shown in str(info.value)


# --- Scanning ---------------------------------------------------------------------
def test_scan_parses_layout(tmp_path):
    subset = str(tmp_path / "train-clean-100")
    write_chapter(subset, 19, 198, {1: "northanger abbey", 2: "CHAPTER ONE"})
    write_chapter(subset, 26, 495, {3: "it\u2019s   a  test"})

    utterances, quarantined = librispeech_oracle.scan_subsets([subset])

    assert quarantined == []
    by_id = {u.utterance_id: u for u in utterances}
    assert sorted(by_id) == ["19-198-0001", "19-198-0002", "26-495-0003"]
    u = by_id["26-495-0003"]
    assert (u.speaker_id, u.chapter_id, u.subset) == (26, 495,
                                                      "train-clean-100")
    assert u.transcript == "IT'S A TEST"
    assert u.audio_path == os.path.join(subset, "26", "495",
                                        "26-495-0003.flac")
    assert u.transcript_path.endswith("26-495.trans.txt")
    assert by_id["19-198-0001"].transcript == "NORTHANGER ABBEY"


def test_find_subset_dirs(tmp_path):
    for name in ("train-clean-100", "train-other-500", "dev-clean"):
        (tmp_path / name).mkdir()
    (tmp_path / "train-clean-360.tar.gz").write_bytes(b"x")
    assert [os.path.basename(d) for d in layout.find_subset_dirs(
        str(tmp_path), "train*")] == ["train-clean-100", "train-other-500"]
    with pytest.raises(ValueError, match="test\\*"):
        layout.find_subset_dirs(str(tmp_path), "test*")


# Every quarantine reason, as `write_faulty_split` injects them.
FAULTY_SPLIT_REASONS = {
    layout.INVALID_CHARACTERS: 1,
    layout.NON_UTF8_TRANSCRIPT: 1,
    layout.EMPTY_TRANSCRIPT: 1,
    layout.MISSING_AUDIO: 1,        # line 6
    layout.MISSING_TRANSCRIPT: 3,   # flac 0007, both flacs of 200/300
    layout.TOO_SHORT: 1,
    layout.TOO_LONG: 1,             # with max_audio_seconds=1.0
    layout.DUPLICATE_UTTERANCE_ID: 2,  # a repeated line, 0002 in two subsets
    layout.MALFORMED_TRANSCRIPT_LINE: 2,
    layout.UNREADABLE_AUDIO: 1,
    layout.EMPTY_AUDIO: 1,
    layout.NON_FINITE_AUDIO: 1,
    layout.BAD_FILENAME: 5,         # x1, wrong speaker, stray, nested, notes
    layout.UNREADABLE_TRANSCRIPT: 1,
}
FAULTY_SPLIT_WRITTEN = ("103-1240-0001", "103-1240-0002", "103-1240-0013")
FAULTY_SPLIT_MAX_SECONDS = 1.0


def write_faulty_split(root: str, prefix: str = "train"):
    """Two subsets `<prefix>-a`, `<prefix>-b` with one of every fault.

    With max_audio_seconds=FAULTY_SPLIT_MAX_SECONDS the split writes
    FAULTY_SPLIT_WRITTEN and quarantines FAULTY_SPLIT_REASONS (25 items).
    Returns the two subset directories.
    """
    a = os.path.join(root, f"{prefix}-a")
    b = os.path.join(root, f"{prefix}-b")
    # 103/1240: good items plus transcript- and audio-level faults.
    ch = write_chapter(
        a, 103, 1240,
        {1: "GOOD ONE", 2: "good two",
         3: "HELLO, WORLD",                     # invalid_characters
         4: b"CAF\xc9 AU LAIT",                # non_utf8_transcript
         5: "   ",                              # empty_transcript
         6: "NO AUDIO HERE",                    # missing_audio
         7: None,                               # missing_transcript
         8: "TOO SHORT", 9: "TOO LONG",         # duration guards
         10: "GARBAGE", 11: "EMPTY", 12: "NAN"},
        audio={1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5, 7: 0.5,
               8: config.MIN_AUDIO_SECONDS / 2, 9: 1.5})
    with open(os.path.join(ch, "103-1240.trans.txt"), "ab") as f:
        f.write(b"103-1240-0001 GOOD ONE AGAIN\n")  # line 12: duplicate
        f.write(b"this line has no id\n")           # malformed line
        f.write(b"999-1240-0001 WRONG SPEAKER\n")   # malformed line
        f.write(b"\n")                              # blank: not an item
    with open(os.path.join(ch, "103-1240-0010.flac"), "wb") as f:
        f.write(b"not a flac file at all")          # unreadable_audio
    open(os.path.join(ch, "103-1240-0011.flac"), "wb").close()  # empty
    nan = np.full(1600, np.nan, dtype=np.float32)   # non_finite_audio:
    sf.write(os.path.join(ch, "103-1240-0012.flac"), nan, 16000,
             format="WAV", subtype="FLOAT")         # float WAV inside
    write_flac(os.path.join(ch, "103-1240-x1.flac"))
    write_flac(os.path.join(ch, "104-1240-0001.flac"))
    write_flac(os.path.join(a, "103", "stray.flac"))
    write_flac(os.path.join(ch, "nested", "103-1240-0099.flac"))
    with open(os.path.join(ch, "notes.trans.txt"), "w") as f:
        f.write("103-1240-0001 SHADOW\n")
    with open(os.path.join(ch, "README.md"), "w") as f:  # not an item
        f.write("ignored")
    # 200/300: unreadable transcript (a dangling link); its 2 flacs have none.
    ch2 = os.path.join(a, "200", "300")
    write_flac(os.path.join(ch2, "200-300-0001.flac"))
    write_flac(os.path.join(ch2, "200-300-0002.flac"))
    os.symlink(os.path.join(ch2, "gone"),
               os.path.join(ch2, "200-300.trans.txt"))
    # Subset b repeats 103-1240-0002 (duplicate across subsets) + one good.
    write_chapter(b, 103, 1240, {2: "GOOD TWO", 13: "GOOD THREE"})
    return [a, b]


def test_every_fault_is_quarantined_and_reconciled(tmp_path):
    subset_dirs = write_faulty_split(str(tmp_path))

    written, quarantined, found = ingest(
        subset_dirs, max_seconds=FAULTY_SPLIT_MAX_SECONDS)

    assert sorted(u.utterance_id for u, _ in written) == list(
        FAULTY_SPLIT_WRITTEN)
    reasons = collections.Counter(q.reason for q in quarantined)
    assert reasons == FAULTY_SPLIT_REASONS
    assert set(reasons) == set(layout.REASONS)
    # Items: 12 utterance candidates in 103/1240 of a (lines 1-6, 8-12 and
    # flac 7), 2 in b, 2 flacs in 200/300, 1 repeated line, 2 malformed
    # lines, 5 misnamed files, 1 unreadable transcript file.
    assert found == 12 + 2 + 2 + 1 + 2 + 5 + 1 == 25
    assert found == len(written) + len(quarantined)

    by_reason = {q.reason: q for q in quarantined}
    for q in quarantined:
        assert q.message.startswith(q.path + ": "), q
        assert q.subset in ("train-a", "train-b"), q
    assert "103-1240-0006.flac" in by_reason[layout.MISSING_AUDIO].message
    assert by_reason[layout.TOO_LONG].path.endswith("103-1240-0009.flac")
    assert "longer than the maximum 1 s" in by_reason[layout.TOO_LONG].message
    assert "NaN" in by_reason[layout.NON_FINITE_AUDIO].message
    assert "','" in by_reason[layout.INVALID_CHARACTERS].message
    assert by_reason[layout.NON_UTF8_TRANSCRIPT].path.endswith(
        "103-1240-0004.flac")
    assert "103-1240.trans.txt:4" in by_reason[
        layout.NON_UTF8_TRANSCRIPT].message
    assert "unreadable" in next(
        q.message for q in quarantined if q.reason == layout.MISSING_TRANSCRIPT
        and "200-300-0001" in q.path)
    dup_paths = sorted(q.path for q in quarantined
                       if q.reason == layout.DUPLICATE_UTTERANCE_ID)
    assert dup_paths[0].endswith("103-1240.trans.txt:12")
    assert dup_paths[1].endswith(os.path.join("train-b", "103", "1240",
                                              "103-1240-0002.flac"))


# --- Audio -------------------------------------------------------------------------
def test_load_audio_16k_mono_is_unchanged(tmp_path):
    path = str(tmp_path / "a.flac")
    write_flac(path, seconds=0.3, noise=True)
    audio = layout.load_audio(path)
    expected, _ = sf.read(path, dtype="float32")
    assert audio.samples.dtype == np.float32
    np.testing.assert_array_equal(audio.samples, expected)
    assert not audio.resampled and not audio.downmixed
    assert audio.duration == pytest.approx(0.3)


@pytest.mark.parametrize("rate, channels", [
    (config.SAMPLE_RATE, 2), (8_000, 1), (44_100, 1), (44_100, 2)])
def test_load_audio_resamples_and_downmixes_like_soxr(tmp_path, rate,
                                                      channels):
    path = str(tmp_path / "a.flac")
    write_flac(path, seconds=0.4, rate=rate, channels=channels, freq=300.0)

    audio = layout.load_audio(path)

    decoded, _ = sf.read(path, dtype="float32", always_2d=True)
    mono = decoded.mean(axis=1, dtype=np.float32)
    reference = (soxr.resample(mono, rate, config.SAMPLE_RATE, quality="HQ")
                 if rate != config.SAMPLE_RATE else mono)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.samples.shape == reference.shape
    assert abs(len(audio.samples) - 0.4 * config.SAMPLE_RATE) <= 1
    np.testing.assert_allclose(audio.samples, reference, atol=RESAMPLE_ATOL,
                               rtol=0)
    assert audio.resampled == (rate != config.SAMPLE_RATE)
    assert audio.downmixed == (channels > 1)
    assert (audio.source_sample_rate, audio.source_channels) == (rate,
                                                                 channels)
    # And the result is the signal itself: a 300 Hz (+ 600 Hz) sine at 16 kHz,
    # away from the filter's edge transients.
    t = np.arange(len(audio.samples)) / config.SAMPLE_RATE
    ideal = np.mean([0.5 * np.sin(2 * np.pi * 300.0 * (c + 1) * t)
                     for c in range(channels)], axis=0)
    inner = slice(800, -800)
    np.testing.assert_allclose(audio.samples[inner], ideal[inner], atol=2e-3)


@pytest.mark.parametrize("seconds, reason", [
    (config.MIN_AUDIO_SECONDS / 2, layout.TOO_SHORT),
    (2.5, layout.TOO_LONG),
])
def test_load_audio_duration_guards(tmp_path, seconds, reason):
    path = str(tmp_path / "a.flac")
    write_flac(path, seconds=seconds)
    with pytest.raises(layout.QuarantineError) as info:
        layout.load_audio(path, max_seconds=2.0)
    assert info.value.reason == reason
    assert path in str(info.value)
    layout.load_audio(path, max_seconds=3.0, min_seconds=0.0)  # accepted


@pytest.mark.parametrize("content, reason, says", [
    (b"", layout.EMPTY_AUDIO, "0 bytes"),
    ("wav0", layout.EMPTY_AUDIO, "no samples"),
    (b"fLaC\x00\x00garbage", layout.UNREADABLE_AUDIO, "cannot read"),
])
def test_load_audio_empty_and_unreadable(tmp_path, content, reason, says):
    path = str(tmp_path / "a.flac")
    if content == "wav0":  # a valid header with zero frames
        sf.write(path, np.zeros(0), 16000, format="WAV")
    else:
        with open(path, "wb") as f:
            f.write(content)
    with pytest.raises(layout.QuarantineError) as info:
        layout.load_audio(path)
    assert info.value.reason == reason
    assert path in str(info.value) and says in str(info.value)


def test_load_audio_default_max_is_config(tmp_path):
    path = str(tmp_path / "a.flac")
    write_flac(path, seconds=config.MAX_AUDIO_SECONDS + 0.5, rate=8_000)
    with pytest.raises(layout.QuarantineError, match="too_long"):
        layout.load_audio(path)


def test_quarantine_error_rejects_unknown_reason():
    with pytest.raises(ValueError, match="unknown quarantine reason"):
        layout.QuarantineError("bad_vibes", "p", "m")
