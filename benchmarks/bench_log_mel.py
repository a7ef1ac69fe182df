"""Log-mel throughput: our Transform feature function vs librosa, side by side.

    python benchmarks/bench_log_mel.py --quick   # < 1 minute, prints the ratio last
    python benchmarks/bench_log_mel.py           # full run, updates BENCHMARKS.md

Both compute the same 80-bin log-mel (25 ms Hann window, 10 ms hop, 16 kHz)
on the same audio in the same process; throughput is audio-seconds per
wall-second, and the max abs difference of the log-mel is reported beside it.
Our function runs as a traced tf.function over a batch, as it does in
Transform and serving; librosa runs per utterance, as a Python data loader
would call it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from models import config  # noqa: E402


def _librosa_log_mel(audio: np.ndarray) -> np.ndarray:
    import librosa
    # librosa centres the 25 ms window inside each FFT_LENGTH frame; padding
    # by that offset aligns its frames with ours (see models/features.py).
    offset = (config.FFT_LENGTH - config.WINDOW_SAMPLES) // 2
    mel = librosa.feature.melspectrogram(
        y=np.pad(audio, offset), sr=config.SAMPLE_RATE, n_fft=config.FFT_LENGTH,
        win_length=config.WINDOW_SAMPLES, hop_length=config.HOP_SAMPLES,
        window="hann", center=False, power=2.0, n_mels=config.N_MELS,
        fmin=config.MEL_FMIN, fmax=config.MEL_FMAX)
    return np.log(mel + config.LOG_FLOOR).T


def run(n_clips: int, seconds: float, repeats: int) -> dict:
    import tensorflow as tf
    from models import features

    audio = common.synthetic_audio(n_clips, seconds)
    lengths = np.full([n_clips], audio.shape[1], np.int64)
    ours_fn = tf.function(features.log_mel_spectrogram)
    calls = {
        "ours": lambda: ours_fn(tf.constant(audio), tf.constant(lengths))[0].numpy(),
        "librosa": lambda: [_librosa_log_mel(a) for a in audio]}
    out, rss = {}, {}
    for name, fn in calls.items():  # trace + warm up
        out[name] = fn()
        rss[name] = common.peak_rss_mb()
    times = {name: [] for name in calls}
    for _ in range(repeats):  # alternate, so background load hits both
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ours_t, ref_t = min(times["ours"]), min(times["librosa"])
    max_abs = max(float(np.max(np.abs(out["ours"][i, :r.shape[0]] - r)))
                  for i, r in enumerate(out["librosa"]))
    audio_seconds = n_clips * seconds
    return {"clips": n_clips, "clip_seconds": seconds,
            "ours_audio_s_per_s": audio_seconds / ours_t,
            "librosa_audio_s_per_s": audio_seconds / ref_t,
            "ratio": ref_t / ours_t, "max_abs_diff": max_abs,
            "peak_rss_ours_mb": rss["ours"], "peak_rss_librosa_mb": rss["librosa"]}


def main(argv=None) -> int:
    import librosa

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        result = run(n_clips=16, seconds=5.0, repeats=3)
    else:
        result = run(n_clips=64, seconds=10.0, repeats=5)
    rows = [("clips x seconds", f"{result['clips']} x {result['clip_seconds']:.0f} s"),
            ("versions", f"librosa {librosa.__version__}, NumPy {np.__version__}"),
            ("ours (tf.signal, batched tf.function)",
             f"{result['ours_audio_s_per_s']:.0f} audio-s/s"),
            ("librosa.feature.melspectrogram + log",
             f"{result['librosa_audio_s_per_s']:.0f} audio-s/s"),
            ("ratio ours / librosa (target >= 2x)", f"**{result['ratio']:.1f}x**"),
            ("max abs log-mel difference (both float32)",
             f"{result['max_abs_diff']:.2e}"),
            ("peak RSS after ours / after librosa",
             f"{result['peak_rss_ours_mb']:.0f} / {result['peak_rss_librosa_mb']:.0f} MB")]
    verdict = "met" if result["ratio"] >= 2.0 else "not met"
    notes = (f"Target (at least 2x librosa at the same precision): {verdict}. Ours "
             "is one batched tf.function over all clips (TensorFlow's intra-op "
             "threads); librosa runs clip by clip, as a Python data loader "
             "would call it.",)
    common.report(rows, result["ratio"], quick=args.quick, section="Log-mel features",
                  command="python benchmarks/bench_log_mel.py", notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
