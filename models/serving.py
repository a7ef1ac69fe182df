"""The exported SavedModel: raw 16 kHz audio in, text out.

Two signatures share one graph path (Transform layer -> encoder -> greedy
decoding -> detokenisation):
- `transcribe`: float32 audio [batch, samples] plus per-example lengths;
- `serving_default`: serialized tf.Examples in the raw ExampleGen format,
  which is what TFMA's Evaluator feeds.
Detokenisation is the model's vocabulary's, in the graph: the characters'
`tokenizer.tf_decode` or the official BPE's `bpe.tf_decode`.
"""

from __future__ import annotations

import json
import os
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from models import bpe
from models import config
from models import decoding
from models import tokenizer

PRESET_ASSET = "moonshine_preset.json"


def _audio_to_raw_feature(audio: tf.Tensor, num_samples: tf.Tensor, spec):
    """Dense padded audio as the parsed form Transform's raw spec expects."""
    ragged = tf.RaggedTensor.from_tensor(audio, lengths=num_samples)
    if isinstance(spec, tf.io.FixedLenFeature):
        return audio
    if isinstance(spec, tf.io.RaggedFeature):
        return ragged
    return ragged.to_sparse()


class MoonshineServingModule(tf.Module):
    """Tracks the model and the Transform layer so both are saved."""

    def __init__(self, model, tf_transform_output, preset: config.Preset):
        super().__init__(name="moonshine_serving")
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._audio_spec = tf_transform_output.raw_feature_spec()[
            config.AUDIO_KEY]
        self._frontend = preset.model.frontend
        self._decode = preset.decode
        self._n_mels = preset.model.n_mels
        self._detokenize = (
            bpe.tf_decode
            if preset.model.vocabulary == config.MOONSHINE_BPE_VOCABULARY
            else tokenizer.tf_decode)

    def _model_inputs(self, transformed):
        if self._frontend == "log_mel":
            num_frames = tf.cast(transformed[config.NUM_FRAMES_KEY], tf.int32)
            flat = transformed[config.LOG_MEL_KEY]
            if isinstance(flat, tf.SparseTensor):
                flat = tf.RaggedTensor.from_sparse(flat)
            frames = tf.RaggedTensor.from_row_lengths(
                tf.reshape(flat.flat_values, [-1, self._n_mels]),
                tf.cast(num_frames, tf.int64))
            return frames.to_tensor(0.0), num_frames
        if self._frontend == "waveform":
            num_samples = tf.cast(transformed[config.NUM_SAMPLES_KEY], tf.int32)
            samples = transformed[config.WAVEFORM_KEY]
            if isinstance(samples, tf.SparseTensor):
                samples = tf.RaggedTensor.from_sparse(samples)
            return samples.to_tensor(0.0), num_samples
        raise ValueError(f"unsupported front end {self._frontend!r}")

    def _transcribe(self, audio: tf.Tensor, num_samples: tf.Tensor):
        num_samples = tf.cast(num_samples, tf.int64)
        # Checked before anything reads the inputs, for a clear message
        # rather than an out-of-bounds slice deep in the Transform graph.
        tf.debugging.assert_rank(audio, 2, message=(
            "audio must be float32 [batch, samples]"))
        tf.debugging.assert_rank(num_samples, 1, message=(
            "num_samples must be int64 [batch]"))
        # A loaded signature can still bind audio of another rank (TF's
        # fallback binding): the row count check comes first and says so.
        rows = tf.debugging.assert_equal(
            tf.shape(num_samples, out_type=tf.int64)[0],
            tf.shape(audio, out_type=tf.int64)[0],
            message="num_samples needs one length per audio row "
            "(audio must be float32 [batch, samples])")
        with tf.control_dependencies([rows]):
            checks = [
                tf.debugging.assert_positive(
                    num_samples, message="empty audio: every row needs samples"),
                tf.debugging.assert_less_equal(
                    num_samples, tf.shape(audio, out_type=tf.int64)[1],
                    message="num_samples exceeds the audio length"),
            ]
        with tf.control_dependencies(checks):
            audio = tf.debugging.check_numerics(
                audio, "audio contains NaN or Inf samples")
        raw = {config.AUDIO_KEY: _audio_to_raw_feature(
            audio, num_samples, self._audio_spec)}
        transformed = self.tft_layer(raw)
        features, lengths = self._model_inputs(transformed)
        encoded, encoded_lengths = self.model.encode(features, lengths)
        seconds = tf.cast(num_samples, tf.float32) / float(config.SAMPLE_RATE)
        max_tokens = decoding.max_tokens_for_duration(seconds)
        if self._decode.beam_width == 1:
            token_ids = decoding.greedy_decode(
                self.model, encoded, encoded_lengths, max_tokens)
        else:
            token_ids = decoding.beam_search_decode(
                self.model, encoded, encoded_lengths, max_tokens,
                beam_width=self._decode.beam_width,
                length_penalty=self._decode.length_penalty)
        return {config.TEXT_OUTPUT_KEY: self._detokenize(token_ids),
                config.TOKENS_OUTPUT_KEY: tf.cast(token_ids, tf.int32)}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="audio"),
        tf.TensorSpec([None], tf.int64, name="num_samples")])
    def transcribe(self, audio, num_samples):
        return self._transcribe(audio, num_samples)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, serialized):
        parsed = tf.io.parse_example(
            serialized, {config.AUDIO_KEY: tf.io.VarLenFeature(tf.float32)})
        audio = tf.RaggedTensor.from_sparse(parsed[config.AUDIO_KEY])
        return self._transcribe(audio.to_tensor(0.0), audio.row_lengths())


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


def export_serving_model(model, tf_transform_output, preset: config.Preset,
                         export_dir: str) -> str:
    module = MoonshineServingModule(model, tf_transform_output, preset)
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        config.TRANSCRIBE_SIGNATURE: module.transcribe.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    # Beside the SavedModel so `transcribe` and reports can show what was served.
    with tf.io.gfile.GFile(os.path.join(export_dir, PRESET_ASSET), "w") as f:
        json.dump(config.preset_to_dict(preset), f, indent=2)
    return export_dir
