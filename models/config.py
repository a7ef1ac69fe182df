"""The one source of truth for every number in moonshine-tfx.

Audio, feature, vocabulary and model sizes live here and nowhere else: the
ExampleGen, Transform, Trainer, Evaluator, serving signature, CLI and tests all
import them. Presets bundle a model size with a training schedule.

The seed configuration (the project's ModelArgs table) departs from the paper
in two deliberate ways: it feeds the encoder 80-bin log-mel features through a
conv stem of kernel 9 / stride 2 instead of the paper's raw-waveform stem, and
it predicts a 31-symbol character vocabulary instead of the 32k BPE. Both
are switches of ModelConfig: `frontend='waveform'` and
`vocabulary='moonshine_bpe'` give the published model; a third vocabulary,
`'learned_wordpiece'`, is learned from the training transcripts.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, Optional, Tuple

# --- Audio ------------------------------------------------------------------
SAMPLE_RATE = 16_000
WINDOW_SECONDS = 0.025  # 25 ms Hann window
HOP_SECONDS = 0.010  # 10 ms hop
WINDOW_SAMPLES = int(round(SAMPLE_RATE * WINDOW_SECONDS))  # 400
HOP_SAMPLES = int(round(SAMPLE_RATE * HOP_SECONDS))  # 160
FFT_LENGTH = 512  # next power of two >= WINDOW_SAMPLES
N_MELS = 80
MEL_FMIN = 0.0
MEL_FMAX = SAMPLE_RATE / 2.0
LOG_FLOOR = 1e-6  # log(mel + LOG_FLOOR) keeps digital silence finite
# Transform analyses the log-mel normalisation statistics (80 means and
# variances) on every LOG_MEL_STATS_EVERY-th utterance of each chapter
# (utterance numbers 0, 4, 8, ...), not on the whole train split: they settle
# long before it ends, and the analyse pass then decodes and transforms a
# quarter of the audio (BENCHMARKS.md, "Data steps at scale"). Every chapter
# gives its first utterance, so every speaker is in them and no split with
# audio is left without statistics. 1 analyses every utterance.
LOG_MEL_STATS_EVERY = 4

# --- Data guards (icefall/ESPnet-style duration filters) --------------------
MIN_AUDIO_SECONDS = WINDOW_SECONDS  # shorter than one window has no frame
MAX_AUDIO_SECONDS = 35.0  # LibriSpeech's longest utterance is ~35 s

# --- Character vocabulary (the seed's tgt_vocab_size = 31) ------------------
PAD_ID = 0
SOS_ID = 1
EOS_ID = 2
SPECIAL_TOKENS: Tuple[str, ...] = ("<pad>", "<s>", "</s>")
# LibriSpeech transcripts are upper case with the apostrophe as the only
# punctuation; space separates words.
CHARACTERS: Tuple[str, ...] = (" ", "'") + tuple(
    chr(c) for c in range(ord("A"), ord("Z") + 1))
VOCABULARY: Tuple[str, ...] = SPECIAL_TOKENS + CHARACTERS
VOCAB_SIZE = len(VOCABULARY)
assert VOCAB_SIZE == 31, VOCAB_SIZE

# --- Vocabularies (ModelConfig.vocabulary) -----------------------------------
# 'characters': the 31 symbols above (models/tokenizer.py). 'moonshine_bpe':
# the official model's byte-fallback BPE (models/bpe.py, which ships its
# tokenizer.json): 32,000 pieces plus 768 reserved special ids, the 32,768 rows
# of the official embedding. Its <s> and </s> are SOS_ID and EOS_ID; its
# <unk> shares PAD_ID, and byte fallback means encoding never emits it.
# 'learned_wordpiece': LEARNED_VOCAB_SIZE WordPiece pieces (specials first)
# learned by Transform from the training split's transcripts
# (models/wordpiece.py): a few hundred pieces, as icefall's 500-piece BPE
# for LibriSpeech; 256 because the embedded corpus's 1,449 training words
# would make a larger vocabulary mostly whole words.
CHARACTER_VOCABULARY = "characters"
MOONSHINE_BPE_VOCABULARY = "moonshine_bpe"
LEARNED_VOCABULARY = "learned_wordpiece"
MOONSHINE_BPE_VOCAB_SIZE = 32_768
LEARNED_VOCAB_SIZE = 256
VOCABULARY_SIZES: Dict[str, int] = {
    CHARACTER_VOCABULARY: VOCAB_SIZE,
    MOONSHINE_BPE_VOCABULARY: MOONSHINE_BPE_VOCAB_SIZE,
    LEARNED_VOCABULARY: LEARNED_VOCAB_SIZE,
}
# The learned vocabulary's pieces (WordPiece vocab.txt: one per line, line
# number = id): an asset of the Transform graph (tft.annotate_asset name) and
# a file beside the exported SavedModel and its TFLite files, which decode
# with it.
LEARNED_VOCABULARY_ASSET = "learned_wordpiece_vocab.txt"
# BPE is tokenised in Python (merges are no TF graph op): the ExampleGen
# writes each transcript's ids (no <s>/</s>) as this int64 feature when its
# pipeline trains that vocabulary, and Transform wraps them in <s> ... </s>.
MOONSHINE_BPE_IDS_KEY = "moonshine_bpe_ids"
# The vocabularies whose ids the ExampleGen writes; Transform tokenises the
# others itself.
EXAMPLE_GEN_ID_VOCABULARIES: Tuple[str, ...] = (MOONSHINE_BPE_VOCABULARY,)

# Greedy decoding is capped by audio duration, as the official model caps it
# at ~6 BPE tokens per second; characters need a proportionally larger cap
# (English speech runs at 12-18 characters per second).
MAX_TOKENS_PER_SECOND = 25.0
MIN_DECODE_TOKENS = 8

# --- Progress ---------------------------------------------------------------
# Python logger of the progress lines a user watches during a run (data
# steps, training epochs); `moonshine-tfx run` shows them, and little else.
PROGRESS_LOGGER = "moonshine_tfx.progress"
# Beam workers' log records reach the runner's process under Beam's own
# logger names: a progress line starts with this, wherever it was logged.
PROGRESS_PREFIX = "progress | "
PROGRESS_SECONDS = 10.0  # at most one progress line per step this often

# --- Several training workers ----------------------------------------------
# The Trainer's custom_config key of the worker count a multi-worker job was
# compiled for (`compile-kubeflow --workers N`); run_fn checks that TF_CONFIG
# names exactly that many workers.
TRAINER_WORKERS_KEY = "workers"

# --- Long audio in the `transcribe` CLI -------------------------------------
# Audio longer than the window is cut into segments of at most that length,
# each cut at the quietest SPLIT_FRAME_SECONDS frame of the window's last
# SPLIT_SEARCH_SECONDS (energy-based silence splitting, no overlap), and the
# segments' texts are joined with a space.
TRANSCRIBE_WINDOW_SECONDS = 30.0
SPLIT_SEARCH_SECONDS = 5.0
SPLIT_FRAME_SECONDS = 0.1
TRANSCRIBE_BATCH_SEGMENTS = 8  # segments per call of the serving signature

# --- Raw example features (written by the LibriSpeech ExampleGen) -----------
# bytes, two values: 16 kHz mono 16-bit samples, zigzag-coded, as a low and a
# high byte plane (models/pcm.py), what the ExampleGen writes; decoded exactly
# inside the Transform graph.
AUDIO_PCM_KEY = "audio_pcm16"
# float32 samples in [-1, 1], 16 kHz mono: the other way to give a raw example
# its audio, which the serving signatures use (the graph takes either).
AUDIO_KEY = "audio"
TRANSCRIPT_KEY = "transcript"  # bytes, upper-case LibriSpeech text
UTTERANCE_ID_KEY = "utterance_id"  # bytes, "<speaker>-<chapter>-<utt>"
SPEAKER_ID_KEY = "speaker_id"  # int64
CHAPTER_ID_KEY = "chapter_id"  # int64
DURATION_KEY = "duration"  # float32 seconds
# bytes: the LibriSpeech subset an utterance came from (e.g. test-clean), so
# subsets merged into one split (test-clean and test-other -> test) are still
# scored apart, as every LibriSpeech paper reports them.
SUBSET_KEY = "subset"

# --- Transformed features (written by Transform, read by the Trainer) ------
LOG_MEL_KEY = "log_mel"  # float32, flattened [num_frames * n_mels], normalised
NUM_FRAMES_KEY = "num_frames"  # int64
# With ModelConfig.frontend 'waveform', instead of LOG_MEL_KEY/NUM_FRAMES_KEY:
# the samples as ingested (16 kHz, [-1, 1]), which is what the official model
# feeds its conv stem.
WAVEFORM_KEY = "waveform"  # float32 [num_samples]
NUM_SAMPLES_KEY = "num_samples"  # int64
TOKENS_KEY = "tokens"  # int64 [num_tokens]: <s> ids </s>, either vocabulary
NUM_TOKENS_KEY = "num_tokens"  # int64


# --- Front ends (ModelConfig.frontend) --------------------------------------
LOG_MEL_FRONTEND = "log_mel"  # the seed's: conv stem over Transform's log-mel
WAVEFORM_FRONTEND = "waveform"  # the paper's: conv 127/64 stem over raw audio
FRONTENDS: Tuple[str, ...] = (LOG_MEL_FRONTEND, WAVEFORM_FRONTEND)


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """What one front end feeds the encoder.

    Transform writes `feature_key` and `length_key`; the Trainer's input
    pipeline, the serving graph and the benchmarks read them from here, so a
    front end is one entry of `front_end`, not a string compared in many
    places.
    """
    name: str
    feature_key: str  # the transformed feature holding the model input
    length_key: str  # its valid length per example, in units
    units_per_second: float  # frames (log-mel) or samples (waveform)
    # Values per unit: mel bins, or None for one sample per unit.
    channels: Optional[int]
    # SpecAugment, time stretch and mel warp act on log-mel cells only.
    augmentable: bool

    @property
    def padded_shape(self) -> Tuple[Optional[int], ...]:
        """One example's model input with its length dimension unknown."""
        return (None,) if self.channels is None else (None, self.channels)


def front_end(name: str, n_mels: int = N_MELS) -> FrontEnd:
    """The facts of front end `name` (one of FRONTENDS)."""
    if name == LOG_MEL_FRONTEND:
        return FrontEnd(name, LOG_MEL_KEY, NUM_FRAMES_KEY, 1.0 / HOP_SECONDS,
                        n_mels, augmentable=True)
    if name == WAVEFORM_FRONTEND:
        return FrontEnd(name, WAVEFORM_KEY, NUM_SAMPLES_KEY,
                        float(SAMPLE_RATE), None, augmentable=False)
    raise ValueError(f"unknown front end {name!r}; choose one of "
                     f"{list(FRONTENDS)}")

# --- Serving outputs --------------------------------------------------------
TEXT_OUTPUT_KEY = "text"
TOKENS_OUTPUT_KEY = "token_ids"
TRANSCRIBE_SIGNATURE = "transcribe"

# --- TFLite (LiteRT) export (models/tflite.py) --------------------------------
# Beside the SavedModel in the exported (and pushed) model dir: the same
# weights as two signatures, the front end + encoder and one decoder step,
# decoded by a loop in the host as the official ONNX export is. int8 is
# dynamic-range quantisation (int8 weights, float activations).
TFLITE_FLOAT32 = "float32"
TFLITE_INT8 = "int8"
TFLITE_FILES: Dict[str, str] = {TFLITE_FLOAT32: "model_float32.tflite",
                                TFLITE_INT8: "model_int8.tflite"}
TFLITE_SUFFIX = ".tflite"  # `transcribe --model` takes a file of this kind
TFLITE_ENCODE_SIGNATURE = "encode"
TFLITE_DECODE_STEP_SIGNATURE = "decode_step"
# The TFLiteEvaluator's gate (components/tflite_evaluator): a variant ships
# only if its eval WER is at most this much (absolute) above the SavedModel's,
# decoded alike; issue 16's bounds.
SAVED_MODEL_VARIANT = "saved_model"  # the reference the variants are held to
TFLITE_MAX_WER_INCREASE: Dict[str, float] = {TFLITE_FLOAT32: 0.002,
                                             TFLITE_INT8: 0.01}
VARIANTS: Tuple[str, ...] = (SAVED_MODEL_VARIANT, *TFLITE_FILES)  # as reported
# Interpreter threads of `transcribe` (None: TFLite's default).
TFLITE_THREADS: Optional[int] = None
# The host's self-attention cache (models/tflite.py, HostCache) is given to
# each TFLite decode step at a length of a ladder: the first length, then
# TFLITE_CACHE_GROWTH times the last, at most the segment's decode cap. A
# step costs what its cache's length costs and each new length re-allocates
# the interpreter's tensors (two or three steps' time), so doubling keeps a
# step within twice its position's cost for a handful of re-allocations; a
# cache as long as the cap made every step of a long segment pay for all of
# it (int8 slower than the SavedModel at 10 s).
TFLITE_CACHE_FIRST_LENGTH = 32  # above a 1 s segment's cap: no growing
TFLITE_CACHE_GROWTH = 2

# --- Splits -----------------------------------------------------------------
# LibriSpeech subset prefix -> pipeline split name.
SUBSET_PREFIX_TO_SPLIT: Dict[str, str] = {
    "train": "train", "dev": "eval", "test": "test"}
SPLITS: Tuple[str, ...] = ("train", "eval", "test")

# --- Evaluation slices and release gating -------------------------------------
# The ExampleGen writes each utterance's duration bucket as a bytes feature so
# the Evaluator (TFMA) can slice by it; edges are in seconds, buckets are
# [0, 2), [2, 5), [5, 10), [10, inf).
DURATION_BUCKET_KEY = "duration_bucket"  # bytes, one of DURATION_BUCKETS
DURATION_BUCKET_EDGES_SECONDS: Tuple[float, ...] = (2.0, 5.0, 10.0)
DURATION_BUCKETS: Tuple[str, ...] = (
    (f"<{DURATION_BUCKET_EDGES_SECONDS[0]:g}s",)
    + tuple(f"{lo:g}-{hi:g}s" for lo, hi in zip(
        DURATION_BUCKET_EDGES_SECONDS, DURATION_BUCKET_EDGES_SECONDS[1:]))
    + (f">={DURATION_BUCKET_EDGES_SECONDS[-1]:g}s",))
# Features the Evaluator slices by, besides the overall slice.
EVAL_SLICE_KEYS: Tuple[str, ...] = (SUBSET_KEY, SPEAKER_ID_KEY,
                                    DURATION_BUCKET_KEY)
# No-regression gate: the candidate's eval WER may exceed the latest blessed
# model's by at most this much (absolute).
MAX_WER_REGRESSION = 0.0
# Degenerate-output gate: distinct decoded texts per distinct reference on
# the eval split at least this; an empty or constant output scores
# 1 / (distinct references), any real model close to 1.
MIN_OUTPUT_DIVERSITY = 0.5


def duration_bucket(seconds: float) -> str:
    """The DURATION_BUCKETS label of an utterance `seconds` long."""
    for edge, label in zip(DURATION_BUCKET_EDGES_SECONDS, DURATION_BUCKETS):
        if seconds < edge:
            return label
    return DURATION_BUCKETS[-1]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the Moonshine encoder-decoder."""
    dim: int
    ffn_dim: int
    n_heads: int
    enc_layers: int
    dec_layers: int
    # Rows of the token embedding (and output layer): None means the
    # vocabulary's own size (VOCABULARY_SIZES); a larger table is allowed
    # (its extra ids are never targets), a smaller one is an error.
    vocab_size: Optional[int] = None
    # CHARACTER_VOCABULARY, MOONSHINE_BPE_VOCABULARY or LEARNED_VOCABULARY
    # (see above).
    vocabulary: str = CHARACTER_VOCABULARY
    # LOG_MEL_FRONTEND (the seed's stem over Transform's features) or
    # WAVEFORM_FRONTEND (the paper's conv 127/64 stem over raw audio).
    frontend: str = LOG_MEL_FRONTEND
    # Mel bands of the log-mel front end (Transform computes this many).
    n_mels: int = N_MELS
    conv_kernel: int = 9
    conv_stride: int = 2
    conv_layers: int = 2  # two stride-2 convs: 100 -> 25 frames per second
    dropout: float = 0.1
    # Rotary embeddings on the first max(head_dim // 2, 32) dims of a head,
    # as the official model does.
    rope_base: float = 10_000.0
    max_target_len: int = 512
    # Sinusoidal absolute positions added to the encoder's input frames (as
    # Whisper's encoder adds them). Not in the published model, whose rotary
    # embeddings give only relative position, so its cross-attention must
    # infer where it is in the audio from content and the padding edges:
    # learnt from 200k hours, not from the embedded corpus's 1.4 (the demo
    # decoder looped on one word of 5-20 s utterances without them).
    absolute_positions: bool = False

    def __post_init__(self):
        front_end(self.frontend)  # a known front end, or ValueError
        if self.n_mels < 1:
            raise ValueError(f"n_mels must be >= 1, got {self.n_mels}")
        if self.vocabulary not in VOCABULARY_SIZES:
            raise ValueError(
                f"unknown vocabulary {self.vocabulary!r}; choose one of "
                f"{sorted(VOCABULARY_SIZES)}")
        needed = VOCABULARY_SIZES[self.vocabulary]
        if self.vocab_size is None:
            object.__setattr__(self, "vocab_size", needed)
        elif self.vocab_size < needed:
            raise ValueError(
                f"vocab_size {self.vocab_size} is smaller than the "
                f"{self.vocabulary!r} vocabulary ({needed} ids); "
                "ModelConfig.with_vocabulary sizes it")

    def with_vocabulary(self, vocabulary: str) -> "ModelConfig":
        """This config with another vocabulary, sized for it."""
        return dataclasses.replace(self, vocabulary=vocabulary,
                                   vocab_size=None)

    @property
    def front_end(self) -> FrontEnd:
        return front_end(self.frontend, self.n_mels)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return min(self.head_dim, max(self.head_dim // 2, 32))


# Keras dtype policies the Trainer accepts (TrainConfig.precision).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training schedule; steps are optimiser updates."""
    batch_size: int = 16
    epochs: int = 120
    warmup_steps: int = 10_000
    max_lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decay floor as a fraction of max_lr
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    # Teacher forcing with this fraction of the decoder's input tokens
    # replaced by random ones (training only): on a small corpus the decoder
    # otherwise learns to predict from the transcript so far and hardly
    # from the audio, which fails on unseen text.
    token_noise: float = 0.0
    train_steps: int = 0  # 0: derive from epochs x examples / batch_size
    eval_steps: int = 0  # 0: the whole eval split
    seed: int = 42
    # Hybrid CTC/attention (ESPnet): weight of the encoder's CTC loss.
    ctc_weight: float = 0.3
    # SpecAugment (Park et al. 2019) on the normalised log-mel, training only.
    # Mask widths scale with the input: a frequency mask covers at most
    # freq_mask_fraction of the bins, a time mask time_mask_fraction of the
    # utterance, so short clips are not wiped out.
    freq_masks: int = 2
    freq_mask_fraction: float = 0.34  # 27 of 80 bins, LibriSpeech's F
    time_masks: int = 2
    time_mask_fraction: float = 0.05
    # Room acoustics and background noise on the training waveforms, before
    # the features (models/room.py), so both front ends get them; eval and
    # serving never do. With probability reverb_probability an utterance is
    # convolved with a generated room: a direct path and a decaying tail of
    # an RT60 uniform in reverb_rt60_seconds, the direct path reverb_drr_db
    # (uniform) above the tail in energy. Then, with probability
    # noise_probability, noise is added at an SNR uniform in noise_snr_db
    # (against the utterance's own RMS), its power falling as f ** -e with e
    # uniform in noise_exponent (0 white, 1 pink, 2 brown). 0 disables.
    reverb_probability: float = 0.0
    reverb_rt60_seconds: Tuple[float, float] = (0.1, 0.7)
    reverb_drr_db: Tuple[float, float] = (0.0, 12.0)
    noise_probability: float = 0.0
    noise_snr_db: Tuple[float, float] = (10.0, 30.0)
    noise_exponent: Tuple[float, float] = (0.0, 2.0)
    # Feature-space stand-ins for speed perturbation and VTLP (Ko et al.
    # 2015; Jaitly & Hinton 2013): each batch is stretched in time by a factor
    # in 1 +- time_stretch and each utterance's mel axis warped by a factor in
    # 1 +- freq_warp, so few voices look like many. 0 disables.
    time_stretch: float = 0.0
    freq_warp: float = 0.0
    # Curriculum (SortaGrad-like): the first curriculum_steps optimiser
    # steps see only utterances of at most curriculum_max_seconds, so the
    # decoder learns to align before it meets long utterances (0: none).
    curriculum_steps: int = 0
    curriculum_max_seconds: float = 4.0
    # Exported weights are an exponential moving average of the trained ones
    # (as ESPnet and icefall average checkpoints); 0 exports the last step.
    ema_momentum: float = 0.0
    # Batches hold at most this many seconds of audio (padding included), so
    # a bucket of short clips gets more of them than one of long clips, as
    # Lhotse's and ESPnet's duration batching do; 0 batches batch_size
    # utterances whatever their length.
    batch_seconds: float = 0.0
    # 'auto': mixed_bfloat16 on GPUs that have it (compute capability 8.0+),
    # mixed_float16 with loss scaling on older ones, float32 on CPU; or one
    # of PRECISIONS to force it. Weights and the exported model stay float32.
    precision: str = "auto"
    # XLA-compiled train step: None compiles it when a GPU is present.
    jit_compile: Optional[bool] = None
    # Back up the training state every N optimiser steps as well as at each
    # epoch end (0: epoch ends only); a re-run resumes from the newest.
    checkpoint_every_steps: int = 0
    # Stop when the validation loss has not improved for this many epochs
    # (0: train the whole schedule).
    early_stopping_patience: int = 0

    def __post_init__(self):
        if self.precision not in ("auto",) + PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; choose 'auto' or one "
                f"of {list(PRECISIONS)}")
        for name in ("batch_seconds", "checkpoint_every_steps",
                     "early_stopping_patience", "curriculum_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got "
                                 f"{getattr(self, name)}")
        if self.curriculum_max_seconds <= 0:
            raise ValueError("curriculum_max_seconds must be > 0, got "
                             f"{self.curriculum_max_seconds}")
        for name in ("reverb_probability", "noise_probability",
                     "token_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got "
                                 f"{getattr(self, name)}")
        for name in ("reverb_rt60_seconds", "reverb_drr_db", "noise_snr_db",
                     "noise_exponent"):
            # A preset read back from JSON has lists: keep (low, high) tuples.
            low, high = getattr(self, name)
            object.__setattr__(self, name, (float(low), float(high)))
            if low > high:
                raise ValueError(f"{name} must be (low, high), got "
                                 f"{getattr(self, name)}")
        if self.reverb_rt60_seconds[0] <= 0:
            raise ValueError("reverb_rt60_seconds must be > 0, got "
                             f"{self.reverb_rt60_seconds}")


# How the exported model turns encoded audio into tokens (DecodeConfig.method):
# the attention decoder, token by token (greedy or beam search), or the
# encoder's CTC head in one pass (best path: each frame's most likely token,
# repeats merged, blanks dropped), as ESPnet's and WeNet's hybrid
# CTC/attention models can decode.
ATTENTION_DECODING = "attention"
CTC_DECODING = "ctc"
DECODING_METHODS: Tuple[str, ...] = (ATTENTION_DECODING, CTC_DECODING)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How the exported serving graph decodes (models/decoding.py)."""
    # ATTENTION_DECODING or CTC_DECODING (beam_width and length_penalty are
    # the attention decoder's).
    method: str = ATTENTION_DECODING
    # 1 is greedy. A beam keeps several prefixes alive, so one early wrong
    # character no longer derails the rest of the transcript: on the demo
    # model, width 4 took test CER from 16.6 % (greedy) to 11.5 % (README,
    # "Training quality") at ~4x the decoder's work.
    beam_width: int = 4
    # Hypotheses are ranked by sum(log p) / length ** length_penalty; without
    # it (0) a beam favours stopping early.
    length_penalty: float = 1.0

    def __post_init__(self):
        if self.method not in DECODING_METHODS:
            raise ValueError(f"unknown decoding method {self.method!r}; "
                             f"choose one of {list(DECODING_METHODS)}")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A model size with its training schedule, decoding and release gate."""
    name: str
    model: ModelConfig
    train: TrainConfig
    # Blessing bounds on the eval split (TFMA passes metric <= bound): a model
    # that outputs nothing scores WER = CER = 1.0, so a bound below 1 refuses
    # it (the output-diversity gate refuses it too, see metrics.eval_config).
    wer_upper_bound: float = 0.25
    cer_upper_bound: float = 0.12
    decode: DecodeConfig = DecodeConfig()

    def __post_init__(self):
        for name in ("wer_upper_bound", "cer_upper_bound"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got "
                                 f"{getattr(self, name)}")
        if self.decode.method == CTC_DECODING and not self.train.ctc_weight > 0:
            raise ValueError(
                f"preset {self.name!r} decodes with its CTC head, which "
                "trains only with ctc_weight > 0 (it is "
                f"{self.train.ctc_weight})")

    def with_overrides(self, vocabulary: Optional[str] = None,
                       frontend: Optional[str] = None,
                       beam_width: Optional[int] = None,
                       decoding: Optional[str] = None) -> "Preset":
        """This preset with another vocabulary, front end, beam width and/or
        decoding method (None keeps the preset's): `run --vocabulary
        moonshine_bpe --frontend waveform` trains the published model's
        configuration at any preset's size; `--beam-width 1` exports greedy
        decoding, `--decoding ctc` the CTC head's."""
        model = self.model
        if vocabulary:
            model = model.with_vocabulary(vocabulary)
        if frontend:
            model = dataclasses.replace(model, frontend=frontend)
        decode = self.decode
        if beam_width:
            decode = dataclasses.replace(decode, beam_width=beam_width)
        if decoding:
            decode = dataclasses.replace(decode, method=decoding)
        return dataclasses.replace(self, model=model, decode=decode)


# seed, tiny and base keep Preset's default bounds (eval WER 25 %, CER 12 %):
# the published tiny scores 4.5 / 11.7 % WER on test-clean / test-other, so a
# LibriSpeech model above those bounds is broken or badly under-trained.
PRESETS: Dict[str, Preset] = {
    # The seed's ModelArgs table: 256 dims, 8 heads, 8 decoder layers,
    # kernel 9 stride 2, dropout 0.1, 10,000 warmup steps, 120 epochs, batch 2.
    "seed": Preset(
        "seed",
        ModelConfig(dim=256, ffn_dim=1024, n_heads=8, enc_layers=8,
                    dec_layers=8),
        TrainConfig(batch_size=2, epochs=120, warmup_steps=10_000,
                    max_lr=5e-4)),
    # The paper's tiny (27M with its 32k vocabulary) and base (61M).
    "tiny": Preset(
        "tiny",
        ModelConfig(dim=288, ffn_dim=1152, n_heads=8, enc_layers=6,
                    dec_layers=6),
        TrainConfig(batch_size=32, epochs=120, warmup_steps=10_000,
                    max_lr=1.4e-3)),
    "base": Preset(
        "base",
        ModelConfig(dim=416, ffn_dim=1664, n_heads=8, enc_layers=8,
                    dec_layers=8),
        TrainConfig(batch_size=32, epochs=120, warmup_steps=10_000,
                    max_lr=1.4e-3)),
    # Sized for `make demo` on a 2-core CPU in well under 30 minutes.
    "demo": Preset(
        "demo",
        ModelConfig(dim=160, ffn_dim=640, n_heads=4, enc_layers=4,
                    dec_layers=2, dropout=0.1),
        # 36 epochs of batches of 16 fit `make demo` in 25 minutes on 2
        # cores. On the held-out corpus no recipe tried yet generalises in
        # that budget (README, "Training quality"): with 32-second batches,
        # a curriculum, CTC weight 0.5 and absolute encoder positions (all
        # options) one make demo ran at a 40-minute pace and was stopped;
        # with token noise too and 20 epochs it fit (23 min) but scored
        # worse, so the preset stays as it was.
        # Its CTC head learns the held-out split faster than its decoder
        # (README, "Training quality": eval CER 38 % against the decoder's
        # 90 % greedy after these 36 epochs, with CTC weight 0.5), so the
        # demo model decodes with it.
        TrainConfig(batch_size=16, epochs=36, warmup_steps=300,
                    max_lr=2e-3, time_stretch=0.1, freq_warp=0.1,
                    ema_momentum=0.998, ctc_weight=0.5),
        # Held-out sentences and voices (README, "Training quality"): the
        # trained demo model passes these with margin, while a model that
        # outputs nothing (WER = CER = 1) or one constant text does not.
        wer_upper_bound=0.8, cer_upper_bound=0.5,
        decode=DecodeConfig(method=CTC_DECODING)),
    # The end-to-end test: seconds of training, proves wiring not accuracy.
    "ci": Preset(
        "ci",
        ModelConfig(dim=32, ffn_dim=64, n_heads=2, enc_layers=1,
                    dec_layers=1, dropout=0.0),
        TrainConfig(batch_size=8, epochs=1, warmup_steps=10, max_lr=1e-3,
                    train_steps=20, eval_steps=2),
        # Twenty steps of a 30k-parameter model transcribe nothing: its
        # bounds refuse only runaway output (more edits than twice the
        # reference), and the output-diversity gate (MIN_OUTPUT_DIVERSITY)
        # refuses a model whose output ignores its input (empty, constant).
        wer_upper_bound=2.0, cer_upper_bound=2.0,
        decode=DecodeConfig(beam_width=2)),
}
DEFAULT_PRESET = "demo"  # `moonshine-tfx run` and `make demo`


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None


def preset_to_dict(preset: Preset) -> dict:
    """The preset as the JSON that carries it to the pipeline's components
    (ranges as lists), so a dict read back from a component's parameters
    equals the one written."""
    return json.loads(json.dumps(dataclasses.asdict(preset)))


def preset_from_dict(d: dict) -> Preset:
    """The inverse of preset_to_dict; the gate and decoding may be absent
    (the Trainer is given only what training depends on, see
    training_dict), and then take their defaults."""
    gate = {k: d[k] for k in ("wer_upper_bound", "cer_upper_bound") if k in d}
    return Preset(name=d["name"], model=ModelConfig(**d["model"]),
                  train=TrainConfig(**d["train"]),
                  decode=DecodeConfig(**d.get("decode", {})), **gate)


def training_dict(preset: Preset) -> dict:
    """What training depends on: the preset's name, model and schedule.

    Decoding and the release gate shape only the export and the blessing, so
    the Trainer never sees them and changing them never re-trains.
    """
    d = preset_to_dict(preset)
    return {k: d[k] for k in ("name", "model", "train")}
