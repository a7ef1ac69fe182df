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


def test_token_rates_of_the_corpus_are_a_characters_and_a_bpe_rate():
    from benchmarks import bench_latency

    transcripts = bench_latency.corpus_transcripts()
    rates = bench_latency.token_rates(transcripts)
    assert rates["utterances"] == len(transcripts) > 100
    # English speech: ~12-18 characters and ~3-5 BPE tokens per second.
    assert 10 < rates["characters"] < 20, rates
    assert 2 < rates["bpe"] < 6, rates
    assert bench_latency.tokens_for(rates["bpe"], 10) == round(
        10 * rates["bpe"]) + 1  # ... and </s>


def test_tiktoken_rate_merges_lowest_rank_first(tmp_path):
    import base64

    from benchmarks import bench_latency

    path = tmp_path / "tiny.tiktoken"
    pieces = [bytes([b]) for b in range(256)] + [b"ab", b"abc", b" x"]
    path.write_text("".join(f"{base64.b64encode(p).decode()} {rank}\n"
                            for rank, p in enumerate(pieces)))
    # "abc" -> 'ab' then 'abc'; " abc" -> ' ' 'abc'; " x" -> ' x'; "d" -> 'd'.
    rate = bench_latency.tiktoken_rate(str(path), [("ABC ABC X", 2.0),
                                                   ("D", 1.0)])
    assert rate == pytest.approx((1 + 2 + 1 + 1) / 3.0)


def test_ours_decodes_exactly_the_count_greedy_and_with_beam():
    from benchmarks import bench_latency, common

    preset = config.get_preset("ci")  # its beam: width 2
    _, calls = bench_latency._ours(preset, np.zeros(config.N_MELS),
                                   np.ones(config.N_MELS))
    audio = tf.constant(common.synthetic_audio(1, 1.0))
    for decode in ("greedy", "beam"):
        ids, text = calls[decode](audio, 13)
        assert ids.shape == (1, 13), decode
        assert not np.any(ids.numpy() == config.EOS_ID), decode
        assert text.shape == (1,)


# Each --quick ratio's floor, with a wide margin for noise: these 2 cores are
# shared, and a ratio moves by tens of percent between runs (BENCHMARKS.md).
QUICK_FLOORS = {
    # Ours / librosa at one thread each on --quick's 16 x 5 s clips: 2.0-4.9x
    # in six runs on a loaded machine (CPU-time ratio 2.1-2.6x). Floor 1.0,
    # half the lowest. The full run's 64 x 10 s batch measured 0.6x
    # (BENCHMARKS.md, 2026-12-02): this floor guards the short-clip case
    # against regressions, it is no claim that ours beats librosa.
    "bench_log_mel.py": 1.0,
    # Whisper-tiny-sized / ours (characters), greedy at 10 s, each model at
    # its own token count: 0.38-0.82x in --quick runs under load (the ratio
    # is honestly below 1: 162 character steps against 36 BPE steps). Floor
    # 0.25, about two thirds of the lowest; losing our KV cache (7x slower
    # per token at 250 tokens, BENCHMARKS.md) would put it well under 0.2.
    "bench_latency.py": 0.25,
    # Ours / official decode tokens/s: 9.9x in BENCHMARKS.md's full run,
    # 17.3x in --quick (3 s audio, 18 tokens). Floor 3x, a third of the full
    # run's and a sixth of --quick's: our decode run eagerly, a Python loop
    # per token as the official's is, would put it near 1x.
    "bench_decoding.py": 3.0,
    # Bucketed / naive training audio-s/s (ci preset in --quick): 1.56x in
    # --quick, 1.25-1.36x in BENCHMARKS.md's full run. Floor 1.0: bucketing
    # must not lose. That bucketing still works is checked exactly by the
    # padding it prints (see below), which no load moves.
    "bench_training.py": 1.0,
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK_FLOORS))
def test_quick_mode_prints_ratio_last_above_its_floor(script):
    if script == "bench_decoding.py":
        from benchmarks import official
        if official.official_model_py() is None:
            pytest.skip(official.INSTALL_HINT)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", script), "--quick"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"\d+(\.\d+)?x", lines[-1]), lines[-1]
    ratio = float(lines[-1][:-1])
    assert ratio >= QUICK_FLOORS[script], proc.stdout[-3000:]
    if script == "bench_training.py":
        padding = {kind: float(p) for kind, p in re.findall(
            r"(naive|bucketed)\s.*padding ([\d.]+)%", proc.stdout)}
        assert padding["bucketed"] < padding["naive"] / 2, padding


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
