"""The benchmarks run: the Whisper-tiny-sized baseline has Whisper tiny's
shape, and each `--quick` mode ends with its headline ratio (slow: each takes
30-60 s on 2 cores)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from models import config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_whisper_baseline_has_whisper_tiny_shape():
    from benchmarks import whisper_baseline as wb

    model = wb.WhisperTinyLike(max_tokens=4)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert 36e6 < params < 40e6, params  # Whisper tiny: ~37.8M (39M quoted)
    mel = tf.zeros([1, wb.MEL_FRAMES, config.N_MELS])
    assert model.encode_log_mel(mel).shape == (wb.AUDIO_FRAMES, wb.DIM)
    audio = tf.zeros([1, config.SAMPLE_RATE])  # padded to 30 s inside
    assert model.greedy(audio, 4).shape == (4,)


def test_encoder_flops_grow_with_audio_and_stay_below_whisper():
    from benchmarks import bench_latency, whisper_baseline

    c = config.get_preset("tiny").model
    flops = [bench_latency.encoder_flops(c, s) for s in (1, 10, 30)]
    assert flops[0] < flops[1] < flops[2] < whisper_baseline.encoder_flops()
    assert 8 < flops[1] / flops[0] < 12  # ~linear: attention is a small part


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_log_mel.py", "bench_latency.py",
                                    "bench_decoding.py", "bench_training.py"])
def test_quick_mode_prints_ratio_last(script):
    if script == "bench_decoding.py":
        from benchmarks import official
        if official.official_model_py() is None:
            pytest.skip(official.INSTALL_HINT)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", script), "--quick"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+(\.\d+)?x", last), last


@pytest.mark.slow
def test_gpu_quick_mode_prints_a_finite_positive_precision_ratio():
    """bench_gpu.py --quick runs on CPU (the full mode needs a GPU) and ends
    with mixed_bfloat16 / float32 steps/s. On CPU bfloat16 is often slower
    than float32 (0.5-1.5x measured on 2 shared cores), so the floor is far
    below any real ratio: 0.01x (bfloat16 100x slower) cannot happen from
    load alone, while a broken measurement (0, NaN, inf, a step not timed)
    fails the regex or the bounds."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py"),
         "--quick"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+(\.\d+)?x", last), last
    ratio = float(last[:-1])
    assert np.isfinite(ratio) and 0.01 <= ratio <= 100.0, ratio


@pytest.mark.slow
def test_gpu_full_mode_without_a_gpu_fails_in_one_line():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present: the full mode would run")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_gpu.py")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "bench_gpu.py: no GPU found"), proc.stderr[-3000:]
    assert not proc.stdout.strip()
