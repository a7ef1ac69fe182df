"""Transcription with a pushed model, as the `transcribe` command runs it.

Whisper's `transcribe.py` in our terms: read any audio file soundfile reads
(the ExampleGen's own `layout.load_audio`: mono, resampled to 16 kHz with
soxr, the same checks and messages as ingestion), cut audio longer than the
window at pauses (`split_long_audio`), batch the segments through the
model's `transcribe` signature (or, for a .tflite file, through
tf.lite.Interpreter with greedy decoding in Python, `tflite_transcriber`)
and join their texts. A file that cannot be
transcribed is reported in one line naming it; the others still are.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Callable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from components.librispeech_example_gen import layout
from models import config

# [batch, samples] float32 audio and [batch] lengths -> one text per row.
Transcribe = Callable[[np.ndarray, Sequence[int]], List[str]]


class TranscriptionError(Exception):
    """A file or model the user can fix; printed as one line."""


def read_audio(path: str) -> np.ndarray:
    """16 kHz mono float32 samples of `path`, or TranscriptionError naming
    the file and the problem."""
    try:
        return layout.load_audio(path, max_seconds=math.inf,
                                 min_seconds=config.WINDOW_SECONDS).samples
    except layout.QuarantineError as e:
        raise TranscriptionError(e.message) from None


def split_long_audio(samples: np.ndarray,
                     window_seconds: float = config.TRANSCRIBE_WINDOW_SECONDS,
                     search_seconds: float = config.SPLIT_SEARCH_SECONDS,
                     frame_seconds: float = config.SPLIT_FRAME_SECONDS
                     ) -> List[Tuple[int, int]]:
    """[start, end) sample bounds of segments of at most window_seconds that
    tile 16 kHz `samples`; each cut is the middle of the lowest-energy frame
    (the latest, on a tie) in the last search_seconds of its window: a pause,
    if there is one."""
    rate = config.SAMPLE_RATE
    window = int(round(window_seconds * rate))
    frame = int(round(frame_seconds * rate))
    search = max(int(round(search_seconds * rate)), frame)
    if window < 2 * frame:
        raise ValueError(f"window of {window_seconds} s is shorter than two "
                         f"{frame_seconds} s split frames")
    n, start, bounds = len(samples), 0, []
    while n - start > window:
        lo = start + max(window - search, frame)
        frames = (window - (lo - start)) // frame
        region = np.asarray(samples[lo:lo + frames * frame], np.float64)
        energy = np.square(region).reshape(frames, frame).mean(axis=1)
        # The latest of equally quiet frames: segments as long as allowed.
        quietest = frames - 1 - int(np.argmin(energy[::-1]))
        cut = lo + quietest * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def load_saved_model(model_dir: str):
    """(SavedModel, its dir) of a SavedModel dir or, under a Pusher's base
    dir, of its newest version."""
    import tensorflow as tf
    if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        versions = sorted(
            (d.rstrip("/") for d in tf.io.gfile.listdir(model_dir)
             if d.rstrip("/").isdigit()), key=int) if tf.io.gfile.isdir(
                 model_dir) else []
        if not versions:
            raise FileNotFoundError(
                f"{model_dir}: no saved_model.pb and no pushed model versions")
        model_dir = os.path.join(model_dir, versions[-1])
    return tf.saved_model.load(model_dir), model_dir


def saved_model_transcriber(model_path: str) -> Transcribe:
    """The `transcribe` signature of a SavedModel as a Transcribe."""
    import tensorflow as tf
    try:
        model, model_dir = load_saved_model(model_path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise TranscriptionError(f"--model {model_path}: {e}") from None
    if config.TRANSCRIBE_SIGNATURE not in model.signatures:
        raise TranscriptionError(f"--model {model_dir}: no "
                                 f"{config.TRANSCRIBE_SIGNATURE!r} signature")
    signature = model.signatures[config.TRANSCRIBE_SIGNATURE]

    def transcribe(audio: np.ndarray, lengths: Sequence[int]) -> List[str]:
        out = signature(audio=tf.constant(audio),
                        num_samples=tf.constant(list(lengths), tf.int64))
        return [t.decode() for t in out[config.TEXT_OUTPUT_KEY].numpy()]
    return transcribe


def tflite_transcriber(model_path: str,
                       num_threads: Optional[int] = config.TFLITE_THREADS
                       ) -> Transcribe:
    """A converted model file (models/tflite.py) as a Transcribe: each row
    encoded and decoded by tf.lite.Interpreter, the loop here."""
    import tensorflow as tf
    from models import tflite
    if not tf.io.gfile.exists(model_path):
        raise TranscriptionError(f"--model {model_path}: no such file")
    try:
        with tf.io.gfile.GFile(model_path, "rb") as f:
            model = tflite.LiteModel(f.read(), num_threads=num_threads)
    except (OSError, RuntimeError, tf.errors.OpError) as e:
        raise TranscriptionError(f"--model {model_path}: {e}") from None
    except ValueError as e:  # not a flatbuffer, or without our signatures
        problem = " ".join(str(e).split())  # the interpreter's spans lines
        raise TranscriptionError(f"--model {model_path}: not a converted "
                                 f"Moonshine model ({problem})") from None
    try:
        tflite.attach_vocabulary(model, model_path)
        preset = tflite.exported_preset(model_path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise TranscriptionError(f"--model {model_path}: {e}") from None
    # Decoded as the SavedModel beside it decodes (its beam); a file copied
    # out on its own decodes greedily.
    decode = preset.decode if preset is not None else None

    def transcribe(audio: np.ndarray, lengths: Sequence[int]) -> List[str]:
        tflite.check_batch(audio, lengths)
        return [model.transcribe(audio[row, :n], decode)
                for row, n in enumerate(lengths)]
    return transcribe


def transcriber(model_path: str) -> Transcribe:
    """The Transcribe of `transcribe --model`: a .tflite file, or else a
    SavedModel (or a Pusher's base dir)."""
    if model_path.endswith(config.TFLITE_SUFFIX):
        return tflite_transcriber(model_path)
    return saved_model_transcriber(model_path)


def transcribe_samples(transcribe: Transcribe, samples: np.ndarray,
                       window_seconds: float) -> str:
    """Text of 16 kHz samples: segments of at most window_seconds, cut at
    pauses, batched TRANSCRIBE_BATCH_SEGMENTS at a time, texts joined."""
    bounds = split_long_audio(samples, window_seconds)
    texts: List[str] = []
    for i in range(0, len(bounds), config.TRANSCRIBE_BATCH_SEGMENTS):
        chunk = bounds[i:i + config.TRANSCRIBE_BATCH_SEGMENTS]
        lengths = [end - start for start, end in chunk]
        batch = np.zeros([len(chunk), max(lengths)], np.float32)
        for row, (start, end) in enumerate(chunk):
            batch[row, :end - start] = samples[start:end]
        texts += transcribe(batch, lengths)
    return " ".join(t.strip() for t in texts if t.strip())


def transcribe_files(transcribe: Transcribe, files: Sequence[str],
                     window_seconds: float = config.TRANSCRIBE_WINDOW_SECONDS,
                     out: Optional[TextIO] = None,
                     err: Optional[TextIO] = None) -> int:
    """Prints each file's text (`path<TAB>text` for several files) to `out`
    (stdout) and one `error: ...` line per file that failed to `err`
    (stderr); returns how many failed."""
    import tensorflow as tf
    out, err = out or sys.stdout, err or sys.stderr
    failures = 0
    for path in files:
        try:
            text = transcribe_samples(transcribe, read_audio(path),
                                      window_seconds)
        except TranscriptionError as e:
            print(f"error: {e}", file=err)
            failures += 1
            continue
        except tf.errors.OpError as e:  # the graph's own input checks
            print(f"error: {path}: transcription failed ({e.message})",
                  file=err)
            failures += 1
            continue
        print(f"{path}\t{text}" if len(files) > 1 else text, file=out)
    if failures:
        print(f"{failures} of {len(files)} files failed", file=err)
    return failures
