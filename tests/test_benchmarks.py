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
