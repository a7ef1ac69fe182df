"""TFLite (LiteRT) export of a trained Moonshine, and its host-side decoder.

As the official ONNX export does, the graph is cut where a decoding loop
needs it and the loop runs in the host. One .tflite file holds two
signatures over the same weights:

- `encode` (config.TFLITE_ENCODE_SIGNATURE): float32 16 kHz audio [1, samples]
  -> every decoder layer's cross-attention `cross_keys` [layers, 1, heads,
  frames, head_dim] and `cross_values` [layers, 1, heads, head_dim, frames]
  (transposed), computed once, `encoded` [1, frames, dim],
  `encoded_length` [1], and for a model exported to decode with its CTC
  head, that head's `ctc_logits` [1, frames, vocab] (all that CTC decoding
  needs). The front end is the Transform graph's: the
  arithmetic of `features.log_mel_spectrogram` (`features.log_mel_frames`)
  and `preprocessing.normalise_log_mel` with the analysed per-bin
  statistics (read from the Transform output, `normalisation_statistics`),
  or the raw samples for the waveform stem.
- `decode_step` (config.TFLITE_DECODE_STEP_SIGNATURE): `token` [1] at
  `position` [], with per layer i the self-attention cache `cache_keys_i`
  [1, heads, L, head_dim] and `cache_values_i` [1, heads, head_dim, L]
  (positions before `position`, any L >= it) and that layer's
  `cross_keys_i` and `cross_values_i` -> `logits` [1, vocab] and the
  position's own `keys_values` [layers, 2, heads, head_dim], which the host
  stores (Decoder.step_beside_cache). The cache goes in only, as long as
  the host makes it, so a step costs what its position costs; one input per
  layer, as the official ONNX export's past key/values, because TFLite
  slices a stacked tensor by copying it.

Every op is a TFLite builtin (tf.signal.stft lowers to RFFT2D, REAL and
IMAG), so the files need no Flex delegate; `convert` refuses a graph that
would. Variants (config.TFLITE_FILES): float32, and int8 weights by
dynamic-range quantisation (the weights int8; each FULLY_CONNECTED and
CONV_2D also quantises its input row on the fly), except the mel
filterbank, which stays float32 (`_float_filterbank`).

`LiteModel` is the host side: greedy and beam decoding with
tf.lite.Interpreter's signature runners (or the CTC head's best path from
`encode` alone), the decode cap of
`decoding.max_tokens_for_duration`, the cache in NumPy (`HostCache`, grown
along config.TFLITE_CACHE_FIRST_LENGTH's ladder) and the vocabulary's own
detokenisation.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from models import config

AUDIO = "audio"
CROSS_KEYS = "cross_keys"
CROSS_VALUES = "cross_values"
ENCODED = "encoded"
ENCODED_LENGTH = "encoded_length"
CTC_LOGITS = "ctc_logits"
TOKEN = "token"
POSITION = "position"
CACHE_KEYS = "cache_keys"
CACHE_VALUES = "cache_values"
LOGITS = "logits"
KEYS_VALUES = "keys_values"
# decode_step's per-layer inputs (layer_input names them), in its order.
LAYER_INPUTS = (CACHE_KEYS, CACHE_VALUES, CROSS_KEYS, CROSS_VALUES)


# --- The front end's statistics ---------------------------------------------

def normalisation_statistics(tft_output, n_mels: int
                             ) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, variance) [n_mels] that the Transform graph normalises log-mel
    with: the analyzers' results are constants its function captures; which
    is which is settled by reproducing the graph's own output exactly."""
    from models import features
    from models import preprocessing
    from models import serving

    loaded = tf.saved_model.load(tft_output.transform_savedmodel_dir)
    graph = next(iter(loaded.signatures.values())).graph
    stats = [c.numpy() for c, _ in graph.captures
             if hasattr(c, "numpy") and c.dtype == tf.float32
             and c.shape == (n_mels,)]
    audio = tf.constant(_chirp(0.5)[None])
    n = tf.constant([audio.shape[1]], tf.int64)
    transformed = tft_output.transform_features_layer()(
        serving.raw_audio_features(audio, n, tft_output.raw_feature_spec()))
    mel, _ = features.log_mel_spectrogram(audio, n, n_mels=n_mels)
    expected = tf.reshape(tf.sparse.to_dense(transformed[config.LOG_MEL_KEY]),
                          tf.shape(mel)).numpy()
    for mean in stats:
        for variance in stats:
            if mean is variance:
                continue
            got = preprocessing.normalise_log_mel(mel, mean, variance).numpy()
            if np.array_equal(got, expected):
                return mean, variance
    raise ValueError("cannot find the log-mel normalisation statistics in the "
                     f"Transform graph ({len(stats)} [{n_mels}] constants, "
                     "none reproduces its features)")


def _chirp(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * config.SAMPLE_RATE)) / config.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t))).astype(np.float32)


# --- The graph to convert ---------------------------------------------------

def layer_input(kind: str, layer: int) -> str:
    """The name of decode_step's input `kind` (LAYER_INPUTS) of one layer."""
    return f"{kind}_{layer}"


def _transposed(values: tf.Tensor) -> tf.Tensor:
    """[1, H, T, D] -> [1, H, D, T], the layout decode_step reads values in."""
    return tf.transpose(values, [0, 1, 3, 2])


def layer_specs(model_config: config.ModelConfig) -> List[tf.TensorSpec]:
    """decode_step's per-layer inputs: keys [1, heads, T, head_dim], values
    [1, heads, head_dim, T]; T is the cache's or the audio's length."""
    keys = [1, model_config.n_heads, None, model_config.head_dim]
    values = [1, model_config.n_heads, model_config.head_dim, None]
    shapes = {CACHE_KEYS: keys, CACHE_VALUES: values, CROSS_KEYS: keys,
              CROSS_VALUES: values}
    return [tf.TensorSpec(shapes[kind], tf.float32,
                          name=layer_input(kind, layer))
            for kind in LAYER_INPUTS
            for layer in range(model_config.dec_layers)]


def front_end(model, statistics, audio):
    """The encoder's input and its length [1] for one utterance."""
    from models import features
    from models import preprocessing

    if statistics is None:  # the waveform stem takes the samples
        return audio, tf.shape(audio)[1:]
    # One unpadded utterance: every whole window is a valid frame, so
    # log_mel_spectrogram's int64 masking (no TFLite kernel) is moot.
    mel = features.log_mel_frames(audio, model.model_config.n_mels)
    mean, variance = statistics
    return (preprocessing.normalise_log_mel(mel, mean, variance),
            tf.shape(mel)[1:2])


def signatures(model, statistics: Optional[Tuple] = None):
    """(encode, decode_step) tf.functions of one utterance over model;
    statistics: the log-mel (mean, variance), None for the waveform stem."""
    layers = model.model_config.dec_layers

    def encode(audio):
        inputs, lengths = front_end(model, statistics, audio)
        encoded, encoded_lengths = model.encode(inputs, lengths)
        kv, _ = model.decoder.cross_keys_values(encoded, encoded_lengths)
        heads = model.model_config.n_heads
        head_dim = model.model_config.head_dim
        # Reshaped to the static dims decode_step's inputs declare (the
        # encoder loses the batch's 1).
        out = {CROSS_KEYS: tf.reshape(tf.stack([k for k, _ in kv]),
                                      [layers, 1, heads, -1, head_dim]),
               CROSS_VALUES: tf.reshape(
                   tf.stack([_transposed(v) for _, v in kv]),
                   [layers, 1, heads, head_dim, -1]),
               ENCODED: encoded, ENCODED_LENGTH: encoded_lengths}
        if model.ctc_head is not None:
            out[CTC_LOGITS] = model.ctc_logits(encoded)
        return out

    def decode_step(token, position, *per_layer):
        keys, values, cross_keys, cross_values = (
            per_layer[i * layers:(i + 1) * layers]
            for i in range(len(LAYER_INPUTS)))
        # One utterance: every encoded frame is valid, no cross mask needed.
        logits, new = model.decoder.step_beside_cache(
            token, position, list(zip(keys, values)),
            list(zip(cross_keys, cross_values)))
        return {LOGITS: logits, KEYS_VALUES: tf.stack(
            [tf.stack([k[0, :, 0], v[0, :, 0]]) for k, v in new])}

    # No autograph: nothing here branches on tensors, and converting would
    # transpile tf_keras's own call code (seconds per signature).
    return (tf.function(encode, autograph=False, input_signature=[
                tf.TensorSpec([1, None], tf.float32, name=AUDIO)]),
            tf.function(decode_step, autograph=False, input_signature=[
                tf.TensorSpec([1], tf.int32, name=TOKEN),
                tf.TensorSpec([], tf.int32, name=POSITION),
                *layer_specs(model.model_config)]))


def save_signatures(model, statistics, directory: str) -> None:
    """The two signatures as a SavedModel, what the converter reads."""
    module = tf.Module()
    # The variables the signatures capture, without the tf_keras model
    # itself: saving that traces every layer's call (half a minute for ci).
    module.weights = list(model.weights)
    encode, decode_step = signatures(model, statistics)
    tf.saved_model.save(module, directory, signatures={
        config.TFLITE_ENCODE_SIGNATURE: encode.get_concrete_function(),
        config.TFLITE_DECODE_STEP_SIGNATURE:
            decode_step.get_concrete_function()})


# --- Conversion -------------------------------------------------------------

def convert(saved_model_dir: str, variant: str, n_mels: int = 0) -> bytes:
    """The .tflite flatbuffer of LiteModule's SavedModel, builtin ops only;
    n_mels: the log-mel front end's bands (0: the waveform stem)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[config.TFLITE_ENCODE_SIGNATURE,
                                         config.TFLITE_DECODE_STEP_SIGNATURE])
    # Builtins only: a file that needs the Flex delegate runs on no phone
    # without TensorFlow's op library linked in; conversion fails instead.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == config.TFLITE_INT8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant != config.TFLITE_FLOAT32:
        raise ValueError(f"unknown TFLite variant {variant!r}; choose one of "
                         f"{sorted(config.TFLITE_FILES)}")
    content = _native_stderr_held(converter.convert)
    if variant == config.TFLITE_INT8 and n_mels:
        content = _float_filterbank(content, n_mels)
    return content


def _float_filterbank(content: bytes, n_mels: int) -> bytes:
    """An int8 file with its mel filterbank weight back in float32.

    A dynamic-range FULLY_CONNECTED quantises its input to int8 row by row
    as it runs: the filterbank's input, a frame's power spectrum, spans
    ten and more orders of magnitude, so int8 rounds its quiet bins to zero
    and the log-mel of every quiet band moves (the demo model's eval CER
    went from 39.0 % in float32 to 42.8 %; with this weight in float32,
    39.0 %, for 60 kB). With a float weight the op runs in float; every
    other weight stays int8. The filterbank is the one weight of shape
    [n_mels, FFT bins]."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    from models import features

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    codes = [code.builtinCode or code.deprecatedBuiltinCode
             for code in model.operatorCodes]
    shape = [n_mels, features.NUM_FFT_BINS]
    found = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            weight = graph.tensors[op.inputs[1]]
            if (weight.type != schema.TensorType.INT8
                    or list(weight.shape) != shape):
                continue
            quantization = weight.quantization
            buffer = model.buffers[weight.buffer]
            values = np.frombuffer(bytes(bytearray(buffer.data)), np.int8
                                   ).reshape(shape).astype(np.float32)
            scale = np.asarray(quantization.scale, np.float32)
            zero = np.asarray(quantization.zeroPoint, np.float32)
            if scale.size > 1:  # per channel, along quantizedDimension
                axes = [1] * len(shape)
                axes[quantization.quantizedDimension] = scale.size
                scale, zero = scale.reshape(axes), zero.reshape(axes)
            buffer.data = np.frombuffer(
                ((values - zero) * scale).astype(np.float32).tobytes(),
                np.uint8)
            weight.type = schema.TensorType.FLOAT32
            weight.quantization = None
            found += 1
    if found != 1:
        raise ValueError(f"expected one int8 mel filterbank {shape} in the "
                         f"int8 file, found {found}")
    builder = flatbuffers.Builder(len(content) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _native_stderr_held(fn):
    """fn(), with what native code writes to stderr meanwhile held back and
    shown only if fn fails: the converter's absl warnings (`W0000 ...
    Ignored output_format`), which TF_CPP_MIN_LOG_LEVEL does not reach, are
    noise on every successful export."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                return fn()
            except Exception:
                os.dup2(saved, 2)
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def export_tflite(model, tft_output, preset: config.Preset,
                  export_dir: str) -> Dict[str, str]:
    """Writes every config.TFLITE_FILES variant into export_dir; returns
    {variant: path}."""
    statistics, n_mels = None, 0
    if preset.model.frontend == config.LOG_MEL_FRONTEND:
        n_mels = preset.model.n_mels
        statistics = normalisation_statistics(tft_output, n_mels)
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_signatures(model, statistics, tmp)
        for variant, name in config.TFLITE_FILES.items():
            paths[variant] = os.path.join(export_dir, name)
            with tf.io.gfile.GFile(paths[variant], "wb") as f:
                f.write(convert(tmp, variant, n_mels))
    return paths


# --- The host side ----------------------------------------------------------

def decode_cap(num_samples: int) -> int:
    """The SavedModel's decode cap for one utterance, computed as its graph
    computes it (float32 seconds)."""
    from models import decoding
    seconds = np.float32(num_samples) / np.float32(config.SAMPLE_RATE)
    return int(decoding.max_tokens_for_duration(seconds))


def check_batch(audio: np.ndarray, lengths: Sequence[int]) -> None:
    """The transcribe signature's input checks, with its messages, as
    tf.errors.InvalidArgumentError (what its graph raises)."""
    from models import serving

    def fail(message):
        raise tf.errors.InvalidArgumentError(None, None, message)
    audio, lengths = np.asarray(audio), np.asarray(lengths)
    if lengths.ndim != 1 or audio.ndim < 1 or len(lengths) != len(audio):
        fail(serving.ROW_COUNT_MESSAGE)
    if audio.ndim != 2:
        fail(serving.AUDIO_RANK_MESSAGE)
    if np.any(lengths <= 0):
        fail(serving.EMPTY_AUDIO_MESSAGE)
    if np.any(lengths > audio.shape[1]):
        fail(serving.TOO_LONG_MESSAGE)
    if not np.all(np.isfinite(audio)):
        fail(serving.NON_FINITE_MESSAGE)


def exported_preset(model_path: str) -> Optional[config.Preset]:
    """The preset exported beside a converted model (serving.PRESET_ASSET),
    or None for a file copied out on its own."""
    from models import serving

    path = os.path.join(os.path.dirname(model_path), serving.PRESET_ASSET)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return config.preset_from_dict(json.load(f))


def vocabulary_of(model_path: str, vocab_size: int) -> str:
    """The vocabulary of a converted model: the preset exported beside it,
    or else the one vocabulary with as many ids as its logits."""
    from models import serving

    preset = exported_preset(model_path)
    if preset is not None:
        return preset.model.vocabulary
    matches = [v for v, n in config.VOCABULARY_SIZES.items()
               if n == vocab_size]
    if len(matches) != 1:
        raise ValueError(f"no {serving.PRESET_ASSET} beside it and {vocab_size} "
                         "logits match no vocabulary's size")
    return matches[0]


def attach_vocabulary(model: "LiteModel", model_path: str) -> None:
    """Sets a converted model's vocabulary (vocabulary_of) and, for the
    learned one, its pieces from the vocab.txt exported beside it."""
    from models import serving

    model.vocabulary = vocabulary_of(model_path, model.vocab_size)
    if model.vocabulary == config.LEARNED_VOCABULARY:
        model.learned_pieces = serving.learned_pieces_in(
            os.path.dirname(model_path))
        serving.tf_detokenizer(model.vocabulary, model.learned_pieces)


class HostCache:
    """One hypothesis's self-attention cache, kept by the host between
    decode steps: keys [layers, 1, heads, L, head_dim] and values [layers,
    1, heads, head_dim, L] (decode_step's layouts; [i] is layer i's input,
    contiguous), valid before the next position written. L climbs the
    ladder of config.TFLITE_CACHE_FIRST_LENGTH up to the decode cap."""

    def __init__(self, layers: int, heads: int, head_dim: int, cap: int):
        self.cap = cap
        length = min(config.TFLITE_CACHE_FIRST_LENGTH, max(cap, 1))
        self.keys = np.zeros([layers, 1, heads, length, head_dim], np.float32)
        self.values = np.zeros([layers, 1, heads, head_dim, length],
                               np.float32)

    @property
    def length(self) -> int:
        return self.keys.shape[3]

    def write(self, position: int, keys_values: np.ndarray) -> None:
        """Stores decode_step's keys_values [layers, 2, heads, head_dim] of
        position (the next one), first growing the cache if it is full."""
        if position >= self.length:
            grown = min(self.length * config.TFLITE_CACHE_GROWTH, self.cap)
            pad = max(grown, position + 1) - self.length
            self.keys = np.pad(self.keys, [(0, 0)] * 3 + [(0, pad), (0, 0)])
            self.values = np.pad(self.values, [(0, 0)] * 4 + [(0, pad)])
        self.keys[:, 0, :, position] = keys_values[:, 0]
        self.values[:, 0, :, :, position] = keys_values[:, 1]

    def copy(self) -> "HostCache":
        other = copy.copy(self)
        other.keys, other.values = self.keys.copy(), self.values.copy()
        return other


class LiteModel:
    """A converted Moonshine in tf.lite.Interpreter: greedy and beam
    decoding with the loop in Python, one utterance at a time."""

    def __init__(self, model_content: bytes, vocabulary: Optional[str] = None,
                 num_threads: Optional[int] = config.TFLITE_THREADS):
        """vocabulary: None sets it later (see vocabulary_of)."""
        self.interpreter = tf.lite.Interpreter(model_content=model_content,
                                               num_threads=num_threads)
        self.encoder = self.interpreter.get_signature_runner(
            config.TFLITE_ENCODE_SIGNATURE)
        self.step = self.interpreter.get_signature_runner(
            config.TFLITE_DECODE_STEP_SIGNATURE)
        inputs = self.step.get_input_details()
        self.layers = sum(n.startswith(CACHE_KEYS + "_") for n in inputs)
        expected = {TOKEN, POSITION} | {layer_input(kind, i)
                                        for kind in LAYER_INPUTS
                                        for i in range(self.layers)}
        if not self.layers or set(inputs) != expected:
            raise ValueError(
                f"its {config.TFLITE_DECODE_STEP_SIGNATURE} signature takes "
                f"{', '.join(sorted(inputs))}, not this version's per-layer "
                "cache; export the model again")
        _, self.heads, _, self.head_dim = (int(d) for d in inputs[
            layer_input(CACHE_KEYS, 0)]["shape_signature"])
        self.vocabulary = vocabulary
        # The learned vocabulary's pieces (serving.learned_pieces_in).
        self.learned_pieces = None

    @property
    def vocab_size(self) -> int:
        return int(self.step.get_output_details()[LOGITS]["shape"][-1])

    def encode(self, audio: np.ndarray) -> Dict[str, np.ndarray]:
        """encode's outputs for float32 samples [samples]."""
        return self.encoder(**{AUDIO: np.asarray(audio, np.float32)[None]})

    def _cross(self, audio: np.ndarray) -> Dict[str, np.ndarray]:
        """decode_step's cross inputs of one utterance, by name."""
        out = self.encode(audio)
        return {layer_input(kind, i): out[kind][i]
                for kind in (CROSS_KEYS, CROSS_VALUES)
                for i in range(self.layers)}

    def _cache(self, cap: int) -> HostCache:
        return HostCache(self.layers, self.heads, self.head_dim, cap)

    def _step(self, token: int, position: int, cache: HostCache,
              cross: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feeds = {TOKEN: np.array([token], np.int32),
                 POSITION: np.array(position, np.int32), **cross}
        for i in range(self.layers):
            feeds[layer_input(CACHE_KEYS, i)] = cache.keys[i]
            feeds[layer_input(CACHE_VALUES, i)] = cache.values[i]
        return self.step(**feeds)

    def greedy_tokens(self, audio: np.ndarray,
                      max_tokens: Optional[int] = None) -> List[int]:
        """Token ids as the SavedModel's greedy_decode gives them (no <s>,
        up to and with </s>), capped at max_tokens (default decode_cap)."""
        cross = self._cross(audio)
        cap = decode_cap(len(audio)) if max_tokens is None else max_tokens
        cache = self._cache(cap)
        token, tokens = config.SOS_ID, []
        for t in range(cap):
            out = self._step(token, t, cache, cross)
            cache.write(t, out[KEYS_VALUES])
            token = int(np.argmax(out[LOGITS][0]))  # first maximum, as tf
            tokens.append(token)
            if token == config.EOS_ID:
                break
        return tokens

    def beam_tokens(self, audio: np.ndarray, beam_width: int,
                    length_penalty: float = 0.0,
                    max_tokens: Optional[int] = None) -> List[int]:
        """Token ids of the best beam, as decoding.beam_search_decode
        chooses it: the same float32 scores, finished beams extended by PAD
        at no cost, top-k ties to the lower (beam, token) index, and the
        best of sum(log p) / length ** length_penalty. Up to and with </s>.
        """
        k = int(beam_width)
        if k < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        cross = self._cross(audio)
        cap = decode_cap(len(audio)) if max_tokens is None else max_tokens
        if cap <= 0:
            return []
        vocab = self.vocab_size
        neg = np.float32(-1e9)
        pad_only = np.full(vocab, neg, np.float32)
        pad_only[config.PAD_ID] = 0.0
        caches = [self._cache(cap) for _ in range(k)]
        last = [config.SOS_ID] * k
        seqs: List[List[int]] = [[] for _ in range(k)]
        # Only beam 0 is live at first: the k copies of <s> are one prefix.
        scores = np.array([0.0] + [neg] * (k - 1), np.float32)
        lengths = np.zeros(k, np.int32)
        finished = np.zeros(k, bool)
        for t in range(cap):
            rows, stepped = [], {}
            for b in range(k):
                if finished[b]:
                    rows.append(pad_only)
                elif t == 0 and b > 0:  # the same prefix as beam 0
                    rows.append(rows[0])
                    stepped[b] = stepped[0]
                else:
                    out = self._step(last[b], t, caches[b], cross)
                    rows.append(_log_softmax(out[LOGITS][0]))
                    stepped[b] = out[KEYS_VALUES]
            total = (scores[:, None] + np.stack(rows)).reshape(-1)
            best = np.argsort(-total, kind="stable")[:k]
            beam, tokens = best // vocab, best % vocab
            scores = total[best]
            # A beam goes on with its parent's cache and position t in it;
            # a parent chosen twice is copied, as the serving graph gathers.
            for b in set(beam.tolist()) & set(stepped):
                caches[b].write(t, stepped[b])
            kept, taken = [], set()
            for b in beam.tolist():
                kept.append(caches[b].copy() if b in taken else caches[b])
                taken.add(b)
            caches = kept
            seqs = [seqs[b] + [int(tok)] for b, tok in zip(beam, tokens)]
            was_finished = finished[beam]
            lengths = lengths[beam] + (~was_finished).astype(np.int32)
            finished = (was_finished | (tokens == config.EOS_ID)
                        | (t + 1 >= cap))
            last = [int(tok) for tok in tokens]
            if finished.all():
                break
        normalised = scores / np.power(
            np.maximum(lengths, 1).astype(np.float32),
            np.float32(length_penalty))
        seq = seqs[int(np.argmax(normalised))]
        return (seq[:seq.index(config.EOS_ID) + 1]
                if config.EOS_ID in seq else seq)

    def ctc_tokens(self, audio: np.ndarray) -> List[int]:
        """Token ids as the SavedModel's decoding.ctc_best_path gives them
        (up to and with </s>), from `encode` alone."""
        out = self.encode(audio)
        if CTC_LOGITS not in out:
            raise ValueError(
                f"its {config.TFLITE_ENCODE_SIGNATURE} signature has no "
                f"{CTC_LOGITS!r} output, which CTC decoding needs; export "
                f"the model to decode with {config.CTC_DECODING!r}")
        return ctc_best_path(out[CTC_LOGITS][0],
                             int(out[ENCODED_LENGTH][0])) + [config.EOS_ID]

    def tokens(self, audio: np.ndarray,
               decode: Optional[config.DecodeConfig] = None) -> List[int]:
        """Token ids decoded as `decode` says (default: greedy)."""
        if decode is not None and decode.method == config.CTC_DECODING:
            return self.ctc_tokens(audio)
        if decode is None or decode.beam_width == 1:
            return self.greedy_tokens(audio)
        return self.beam_tokens(audio, decode.beam_width,
                                decode.length_penalty)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of token ids, by the serving graph's own decoder (eagerly)."""
        from models import serving
        decode = serving.tf_detokenizer(self.vocabulary, self.learned_pieces)
        return decode(tf.constant([list(tokens) or [config.EOS_ID]])
                      ).numpy()[0].decode()

    def transcribe(self, audio: np.ndarray,
                   decode: Optional[config.DecodeConfig] = None) -> str:
        return self.detokenize(self.tokens(audio, decode))


def ctc_best_path(logits: np.ndarray, frames: int) -> List[int]:
    """decoding.ctc_best_path of one utterance's CTC logits [T, vocab]
    (its first `frames`), without the </s>."""
    best = np.argmax(logits[:frames], axis=-1)  # first maximum, as tf
    previous = np.concatenate([[config.PAD_ID], best[:-1]])
    keep = (best != previous) & (best >= len(config.SPECIAL_TOKENS))
    return [int(t) for t in best[keep]]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """tf.nn.log_softmax of one row, in float32."""
    logits = logits.astype(np.float32)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum(dtype=np.float32))


def constant_bytes(path: str) -> int:
    """Bytes of a .tflite file's constant tensors (the weights, the mel
    filterbank), without the graph around them."""
    from tensorflow.lite.python import schema_py_generated as schema

    with tf.io.gfile.GFile(path, "rb") as f:
        model = schema.ModelT.InitFromObj(
            schema.Model.GetRootAsModel(f.read(), 0))
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    return sum(len(model.buffers[i].data) for i in used
               if model.buffers[i].data is not None)
