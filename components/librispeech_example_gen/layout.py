"""The LibriSpeech corpus layout: scanning, transcript normalisation, audio.

Pure Python (no TensorFlow, no Beam) for local paths, so it is fast to test
and cheap to ship to Beam workers; any other URI (gs://, s3://) is read
through TFX's filesystem layer (tfx.dsl.io.fileio), imported only then. The
executor wires these functions into a Beam pipeline.

Layout of one subset directory (e.g. ``train-clean-100``)::

    <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

where each transcript line is ``<speaker>-<chapter>-<utt> TEXT``.

Accounting. Every *item* found in a subset ends up either written (a good
utterance) or quarantined with exactly one reason, so
``found == written + quarantined``. An item is one of:

* an utterance candidate: a transcript line paired with its flac file, a
  transcript line without a flac (``missing_audio``) or a flac without a line
  (``missing_transcript``);
* a file that cannot be attributed to an utterance: a misnamed or misplaced
  flac/transcript file (``bad_filename``), a transcript file that cannot be
  read (``unreadable_transcript``), a transcript line without a well-formed id
  (``malformed_transcript_line``) or a repeated line (``duplicate_utterance_id``).

Blank transcript lines and files that are neither ``*.flac`` nor
``*.trans.txt`` are not items (LibriSpeech has none inside a subset).
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import glob
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from models import config

# --- Quarantine reasons -------------------------------------------------------
BAD_FILENAME = "bad_filename"
UNREADABLE_TRANSCRIPT = "unreadable_transcript"
MALFORMED_TRANSCRIPT_LINE = "malformed_transcript_line"
NON_UTF8_TRANSCRIPT = "non_utf8_transcript"
EMPTY_TRANSCRIPT = "empty_transcript"
INVALID_CHARACTERS = "invalid_characters"
MISSING_AUDIO = "missing_audio"
MISSING_TRANSCRIPT = "missing_transcript"
DUPLICATE_UTTERANCE_ID = "duplicate_utterance_id"
UNREADABLE_AUDIO = "unreadable_audio"
EMPTY_AUDIO = "empty_audio"
NON_FINITE_AUDIO = "non_finite_audio"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"

REASONS: Tuple[str, ...] = (
    BAD_FILENAME, UNREADABLE_TRANSCRIPT, MALFORMED_TRANSCRIPT_LINE,
    NON_UTF8_TRANSCRIPT, EMPTY_TRANSCRIPT, INVALID_CHARACTERS, MISSING_AUDIO,
    MISSING_TRANSCRIPT, DUPLICATE_UTTERANCE_ID, UNREADABLE_AUDIO, EMPTY_AUDIO,
    NON_FINITE_AUDIO, TOO_SHORT, TOO_LONG)

# The ingestion report beside the output splits, also an artifact property
# (executor.py writes it; tools/metadata.py reads it).
INGESTION_REPORT_FILE = "ingestion_report.json"
INGESTION_REPORT_PROPERTY = "ingestion_report"

AUDIO_SUFFIX = ".flac"
TRANSCRIPT_SUFFIX = ".trans.txt"

_UTTERANCE_ID_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_FLAC_NAME_RE = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$", re.IGNORECASE)
_TRANSCRIPT_NAME_RE = re.compile(r"^(\d+)-(\d+)\.trans\.txt$", re.IGNORECASE)

# Typographic apostrophes and primes that stand for LibriSpeech's "'".
_APOSTROPHES = {
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark
    "\u02bc": "'",  # modifier letter apostrophe
    "\u2032": "'",  # prime
    "`": "'",
    "\u00b4": "'",  # acute accent
}
_APOSTROPHE_TABLE = str.maketrans(_APOSTROPHES)
_ALLOWED_CHARACTERS = frozenset(config.CHARACTERS)


# --- Records -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Utterance:
    """A transcript line paired with its audio file (audio not decoded yet)."""
    utterance_id: str
    speaker_id: int
    chapter_id: int
    transcript: str  # normalised
    audio_path: str
    transcript_path: str
    subset: str


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """An item that will not be written, with the reason and a message."""
    path: str
    reason: str
    message: str
    utterance_id: Optional[str] = None
    subset: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class QuarantineError(ValueError):
    """A problem with one input item; `reason` is one of REASONS."""

    def __init__(self, reason: str, path: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.path = path
        self.message = message

    def to_quarantined(self, utterance_id: Optional[str] = None,
                       subset: Optional[str] = None) -> Quarantined:
        return Quarantined(path=self.path, reason=self.reason,
                           message=self.message, utterance_id=utterance_id,
                           subset=subset)


# --- Files: local paths directly, URIs through TFX's filesystem layer ------------
def is_uri(path: str) -> bool:
    return "://" in path


def _fileio(path: str):
    """TFX's filesystem layer, with `path`'s scheme registered (a Beam
    worker process reads the corpus too, not only the one that started)."""
    from pipeline import storage  # pylint: disable=import-outside-toplevel
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel
    storage.register_filesystems(path)
    return fileio


def open_file(path: str, mode: str = "rb"):
    """A file of any scheme the pipeline supports, for reading or writing."""
    if is_uri(path):
        return _fileio(path).open(path, mode)
    if "w" in mode:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, mode)  # pylint: disable=unspecified-encoding


def _listdir(directory: str) -> List[str]:
    if is_uri(directory):  # object stores name "directories" with a slash
        return sorted(n.rstrip("/") for n in _fileio(directory).listdir(directory))
    return sorted(os.listdir(directory))


def _isdir(path: str) -> bool:
    return _fileio(path).isdir(path) if is_uri(path) else os.path.isdir(path)


def _read_bytes(path: str) -> bytes:
    if is_uri(path):
        with _fileio(path).open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _walk(directory: str):
    if is_uri(directory):
        return _fileio(directory).walk(directory)
    return os.walk(directory)


def _normpath(path: str) -> str:
    """os.path.normpath for a local path; a URI loses its trailing slash
    only (normpath would fold its '//')."""
    return path.rstrip("/") if is_uri(path) else os.path.normpath(path)


# --- Transcripts -----------------------------------------------------------------
def normalise_transcript(text: str, path: str = "<transcript>") -> str:
    """Upper-cases, maps typographic apostrophes to "'", collapses whitespace.

    Raises QuarantineError(EMPTY_TRANSCRIPT) when nothing is left and
    QuarantineError(INVALID_CHARACTERS) when a character is outside
    config.CHARACTERS; `path` names the source in the message.
    """
    normalised = " ".join(text.translate(_APOSTROPHE_TABLE).upper().split())
    if not normalised:
        raise QuarantineError(EMPTY_TRANSCRIPT, path,
                              f"{path}: transcript is empty")
    invalid = sorted(set(normalised) - _ALLOWED_CHARACTERS)
    if invalid:
        shown = ", ".join(repr(c) for c in invalid)
        raise QuarantineError(
            INVALID_CHARACTERS, path,
            f"{path}: transcript {normalised!r} has characters outside the "
            f"vocabulary: {shown}")
    return normalised


def parse_utterance_id(utterance_id: str) -> Tuple[int, int, int]:
    """'<speaker>-<chapter>-<utt>' -> (speaker, chapter, utt); ValueError if not."""
    match = _UTTERANCE_ID_RE.match(utterance_id)
    if not match:
        raise ValueError(f"{utterance_id!r} is not <speaker>-<chapter>-<utt>")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


@dataclasses.dataclass(frozen=True)
class TranscriptLine:
    utterance_id: str
    line_number: int  # 1-based
    text: Optional[str]  # normalised, None when `error` is set
    error: Optional[QuarantineError]


def read_transcript_file(path: str, speaker: str, chapter: str
                         ) -> Tuple[List[TranscriptLine], List[Quarantined]]:
    """Parses a `<speaker>-<chapter>.trans.txt` file line by line.

    Lines are decoded separately, so one non-UTF-8 line costs one utterance.
    Returns the lines with a well-formed id for this chapter (each carrying its
    normalised text or its quarantine error) and the quarantined lines that
    cannot be attributed to an utterance. Raises OSError if unreadable.
    """
    data = _read_bytes(path)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    lines: List[TranscriptLine] = []
    bad: List[Quarantined] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        where = f"{path}:{number}"
        raw_id, _, raw_text = raw.partition(b" ")
        if not raw_id.isascii():
            bad.append(Quarantined(
                where, MALFORMED_TRANSCRIPT_LINE,
                f"{where}: line does not start with an ASCII utterance id: "
                f"{raw[:60]!r}"))
            continue
        utterance_id = raw_id.decode("ascii")
        match = _UTTERANCE_ID_RE.match(utterance_id)
        if not match or (match.group(1), match.group(2)) != (speaker, chapter):
            bad.append(Quarantined(
                where, MALFORMED_TRANSCRIPT_LINE,
                f"{where}: utterance id {utterance_id!r} is not "
                f"{speaker}-{chapter}-<utt> as the file name requires",
                utterance_id=utterance_id))
            continue
        try:
            text = raw_text.decode("utf-8")
        except UnicodeDecodeError as e:
            lines.append(TranscriptLine(utterance_id, number, None, QuarantineError(
                NON_UTF8_TRANSCRIPT, where,
                f"{where}: transcript of {utterance_id} is not valid UTF-8 "
                f"({e.reason} at byte {e.start}): {raw_text[:60]!r}")))
            continue
        try:
            lines.append(TranscriptLine(
                utterance_id, number, normalise_transcript(text, where), None))
        except QuarantineError as e:
            lines.append(TranscriptLine(utterance_id, number, None, e))
    return lines, bad


# --- Scanning -----------------------------------------------------------------
def _is_item_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(AUDIO_SUFFIX) or lower.endswith(TRANSCRIPT_SUFFIX)


def _misplaced(path: str, subset: str, where: str) -> Quarantined:
    return Quarantined(
        path, BAD_FILENAME,
        f"{path}: misplaced {where}; expected "
        f"<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac or "
        f"<speaker>-<chapter>.trans.txt", subset=subset)


def _walk_misplaced(directory: str, subset: str) -> Iterator[Quarantined]:
    for root, dirs, files in _walk(directory):
        if isinstance(dirs, list):
            dirs.sort()
        for name in sorted(f.rstrip("/") for f in files):
            if _is_item_file(name):
                yield _misplaced(os.path.join(root, name), subset,
                                 "file too deep in the tree")


def find_subset_dirs(input_base: str, pattern: str) -> List[str]:
    """Subset directories matching `<input_base>/<pattern>`, sorted.

    Raises ValueError naming the glob when no directory matches.
    """
    full = os.path.join(input_base, pattern)
    found = _fileio(full).glob(full) if is_uri(full) else glob.glob(full)
    dirs = sorted(p.rstrip("/") for p in found if _isdir(p))
    if not dirs:
        raise ValueError(
            f"no LibriSpeech subset directory matches {full!r} "
            f"(expected e.g. {os.path.join(input_base, 'train-clean-100')})")
    return dirs


def list_subset(subset_dir: str) -> Iterator[Union[str, Quarantined]]:
    """Yields the chapter directories of a subset, and misplaced item files.

    Chapter directories are `<subset>/<speaker>/<chapter>`; a flac or
    transcript file directly under the subset or a speaker directory is
    quarantined as bad_filename.
    """
    subset = os.path.basename(_normpath(subset_dir))
    for speaker in _listdir(subset_dir):
        speaker_path = os.path.join(subset_dir, speaker)
        if not _isdir(speaker_path):
            if _is_item_file(speaker):
                yield _misplaced(speaker_path, subset,
                                 "file directly under the subset")
            continue
        for chapter in _listdir(speaker_path):
            chapter_path = os.path.join(speaker_path, chapter)
            if _isdir(chapter_path):
                yield chapter_path
            elif _is_item_file(chapter):
                yield _misplaced(chapter_path, subset,
                                 "file directly under a speaker directory")


def scan_chapter(chapter_dir: str) -> Iterator[Union[Utterance, Quarantined]]:
    """Pairs the flac files of one chapter directory with transcript lines.

    Yields one Utterance per good pair and one Quarantined per bad item (see
    the module docstring). Audio is not opened here.
    """
    chapter_dir = _normpath(chapter_dir)
    speaker_dir, chapter = os.path.split(chapter_dir)
    subset_dir, speaker = os.path.split(speaker_dir)
    where = _Chapter(chapter_dir, os.path.basename(subset_dir), speaker,
                     chapter)
    audio, transcript_path = yield from _chapter_files(where)

    lines: List[TranscriptLine] = []
    transcript_unreadable = False
    if transcript_path is not None:
        try:
            lines, bad_lines = read_transcript_file(transcript_path, speaker,
                                                    chapter)
        except OSError as e:
            transcript_unreadable = True
            yield Quarantined(
                transcript_path, UNREADABLE_TRANSCRIPT,
                f"{transcript_path}: cannot read transcript file: {e}",
                subset=where.subset)
        else:
            for q in bad_lines:
                yield dataclasses.replace(q, subset=where.subset)

    yield from _paired_lines(where, lines, transcript_path, audio)
    expected = os.path.join(chapter_dir, f"{speaker}-{chapter}"
                            f"{TRANSCRIPT_SUFFIX}")
    for uid, audio_path in sorted(audio.items()):
        if transcript_path is None:
            why = f"there is no transcript file {expected}"
        elif transcript_unreadable:
            why = f"transcript file {transcript_path} is unreadable"
        else:
            why = f"{transcript_path} has no line for {uid}"
        yield Quarantined(audio_path, MISSING_TRANSCRIPT,
                          f"{audio_path}: audio without transcript: {why}",
                          utterance_id=uid, subset=where.subset)


@dataclasses.dataclass(frozen=True)
class _Chapter:
    path: str
    subset: str
    speaker: str
    chapter: str


def _chapter_files(where: _Chapter):
    """Yields the misnamed and misplaced files of a chapter directory as
    Quarantined; returns ({utterance id: flac path}, the transcript path or
    None)."""
    speaker, chapter, subset = where.speaker, where.chapter, where.subset
    audio: Dict[str, str] = {}
    transcript_candidates: List[str] = []
    for name in _listdir(where.path):
        path = os.path.join(where.path, name)
        if _isdir(path):
            yield from _walk_misplaced(path, subset)
            continue
        lower = name.lower()
        if lower.endswith(AUDIO_SUFFIX):
            match = _FLAC_NAME_RE.match(name)
            if not match or (match.group(1), match.group(2)) != (speaker,
                                                                 chapter):
                yield Quarantined(
                    path, BAD_FILENAME,
                    f"{path}: audio file name is not "
                    f"{speaker}-{chapter}-<utt>.flac as its directory "
                    f"requires", subset=subset)
                continue
            audio[name[:-len(AUDIO_SUFFIX)]] = path
        elif lower.endswith(TRANSCRIPT_SUFFIX):
            transcript_candidates.append(path)

    transcript_path: Optional[str] = None
    for path in transcript_candidates:
        match = _TRANSCRIPT_NAME_RE.match(os.path.basename(path))
        if (transcript_path is None and match
                and (match.group(1), match.group(2)) == (speaker, chapter)):
            transcript_path = path
        else:
            yield Quarantined(
                path, BAD_FILENAME,
                f"{path}: transcript file name is not "
                f"{speaker}-{chapter}.trans.txt as its directory requires",
                subset=subset)
    return audio, transcript_path


def _paired_lines(where: _Chapter, lines: List[TranscriptLine],
                  transcript_path: Optional[str], audio: Dict[str, str]
                  ) -> Iterator[Union[Utterance, Quarantined]]:
    """An Utterance or a Quarantined per transcript line; takes the paired
    flac files out of `audio`, leaving those without a line."""
    seen: Dict[str, int] = {}
    for line in lines:
        at = f"{transcript_path}:{line.line_number}"
        uid = line.utterance_id
        if uid in seen:
            yield Quarantined(
                at, DUPLICATE_UTTERANCE_ID,
                f"{at}: utterance id {uid} already appeared on line "
                f"{seen[uid]}", utterance_id=uid, subset=where.subset)
            continue
        seen[uid] = line.line_number
        audio_path = audio.pop(uid, None)
        if audio_path is None:
            yield Quarantined(
                at, MISSING_AUDIO,
                f"{at}: transcript line for {uid} has no audio file "
                f"{os.path.join(where.path, uid + AUDIO_SUFFIX)}",
                utterance_id=uid, subset=where.subset)
        elif line.error is not None:
            yield Quarantined(audio_path, line.error.reason,
                              f"{audio_path}: {line.error.message}",
                              utterance_id=uid, subset=where.subset)
        else:
            yield Utterance(
                utterance_id=uid, speaker_id=int(where.speaker),
                chapter_id=int(where.chapter), transcript=line.text,
                audio_path=audio_path, transcript_path=transcript_path,
                subset=where.subset)


def resolve_duplicates(candidates: Iterable[Utterance]
                       ) -> Tuple[Utterance, List[Quarantined]]:
    """Of utterances sharing one id, keeps the first by (subset, path).

    The others are quarantined as duplicate_utterance_id.
    """
    ordered = sorted(candidates, key=lambda u: (u.subset, u.audio_path))
    keep, rest = ordered[0], ordered[1:]
    return keep, [
        Quarantined(
            u.audio_path, DUPLICATE_UTTERANCE_ID,
            f"{u.audio_path}: utterance id {u.utterance_id} already taken by "
            f"{keep.audio_path}", utterance_id=u.utterance_id,
            subset=u.subset)
        for u in rest]


# --- Audio ----------------------------------------------------------------------
@dataclasses.dataclass
class Audio:
    """Decoded 16 kHz mono float32 audio and what was done to it."""
    samples: np.ndarray  # float32 [num_samples], config.SAMPLE_RATE
    source_sample_rate: int
    source_channels: int
    resampled: bool
    downmixed: bool
    source_subtype: str = ""  # soundfile's, e.g. PCM_16, PCM_24, FLOAT

    @property
    def duration(self) -> float:
        return len(self.samples) / config.SAMPLE_RATE


def resample(samples: np.ndarray, source_rate: int,
             target_rate: int = config.SAMPLE_RATE) -> np.ndarray:
    """soxr's HQ resampler, float32 in and out."""
    import soxr  # pylint: disable=import-outside-toplevel
    return np.asarray(soxr.resample(samples, source_rate, target_rate,
                                    quality="HQ"), dtype=np.float32)


@contextlib.contextmanager
def _audio_source(path: str):
    """What soundfile reads: a local path as is, any other URI (gs://,
    s3://) as a file object from TFX's filesystem layer."""
    if not is_uri(path):
        yield path
        return
    with _fileio(path).open(path, "rb") as f:
        yield f


def _file_size(path: str) -> int:
    """Bytes of an audio file; QuarantineError when it does not exist."""
    if is_uri(path):
        fileio = _fileio(path)
        try:
            return fileio.stat(path).length
        except fileio.NotFoundError:
            raise QuarantineError(UNREADABLE_AUDIO, path,
                                  f"{path}: no such file") from None
    if not os.path.exists(path):
        raise QuarantineError(UNREADABLE_AUDIO, path, f"{path}: no such file")
    return os.path.getsize(path)


def load_audio(path: str,
               max_seconds: float = config.MAX_AUDIO_SECONDS,
               min_seconds: float = config.MIN_AUDIO_SECONDS) -> Audio:
    """Reads an audio file (a local path or a gs:// / s3:// URI) as 16 kHz
    mono float32 samples.

    Multi-channel audio is averaged to mono; other sample rates are resampled
    with soxr. Raises QuarantineError with reason unreadable_audio,
    empty_audio, non_finite_audio, too_short or too_long; the duration guards
    are checked from the header first (a long file is never decoded) and again
    on the 16 kHz result.
    """
    import soundfile as sf  # pylint: disable=import-outside-toplevel
    if _file_size(path) == 0:
        raise QuarantineError(EMPTY_AUDIO, path,
                              f"{path}: audio file is empty (0 bytes)")
    try:
        with _audio_source(path) as source, sf.SoundFile(source) as f:
            info = (f.frames, f.samplerate, f.subtype)
            if info[0] > 0 and info[1] > 0:
                _check_duration(path, info[0] / info[1], max_seconds,
                                min_seconds)
            try:
                data = f.read(dtype="float32", always_2d=True)
            except Exception as e:  # pylint: disable=broad-except
                raise QuarantineError(UNREADABLE_AUDIO, path,
                                      f"{path}: cannot decode audio: {e}"
                                      ) from e
    except QuarantineError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise QuarantineError(UNREADABLE_AUDIO, path,
                              f"{path}: cannot read audio header: {e}") from e
    frames, rate, subtype = info
    if frames <= 0 or rate <= 0 or data.size == 0:
        raise QuarantineError(EMPTY_AUDIO, path,
                              f"{path}: audio has no samples")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise QuarantineError(
            NON_FINITE_AUDIO, path,
            f"{path}: {bad} of {data.size} samples are NaN or infinite")
    channels = data.shape[1]
    downmixed = channels > 1
    samples = data.mean(axis=1, dtype=np.float32) if downmixed else data[:, 0]
    resampled = rate != config.SAMPLE_RATE
    if resampled:
        samples = resample(samples, rate)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise QuarantineError(EMPTY_AUDIO, path,
                              f"{path}: audio has no samples after "
                              f"resampling {rate} Hz to {config.SAMPLE_RATE} Hz")
    _check_duration(path, samples.size / config.SAMPLE_RATE, max_seconds,
                    min_seconds)
    return Audio(samples=samples, source_sample_rate=int(rate),
                 source_channels=int(channels), resampled=resampled,
                 downmixed=downmixed, source_subtype=subtype)


def _check_duration(path: str, seconds: float, max_seconds: float,
                    min_seconds: float) -> None:
    if seconds < min_seconds:
        raise QuarantineError(
            TOO_SHORT, path,
            f"{path}: audio is {seconds:.4f} s, shorter than the minimum "
            f"{min_seconds:g} s")
    if seconds > max_seconds:
        raise QuarantineError(
            TOO_LONG, path,
            f"{path}: audio is {seconds:.3f} s, longer than the maximum "
            f"{max_seconds:g} s")
