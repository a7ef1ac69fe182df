"""The exported SavedModel: raw 16 kHz audio in, text out.

The Trainer saves the trained weights with the preset they train
(`save_trained`); the ModelExporter component calls `export_fn`, which adds
what only serving needs: the Transform layer, the decoding loop (the
DecodeConfig it is given) and detokenisation. Two signatures share one graph
path (Transform layer -> encoder -> the attention decoder's greedy or beam
decoding, or the CTC head's best path -> detokenisation):
- `transcribe`: float32 audio [batch, samples] plus per-example lengths;
- `serving_default`: serialized tf.Examples in the raw ExampleGen format,
  which is what TFMA's Evaluator feeds.
Detokenisation is the model's vocabulary's, in the graph: the characters'
`tokenizer.tf_decode`, the official BPE's `bpe.tf_decode`, or the learned
WordPiece's `wordpiece.tf_decode` over the pieces Transform learned (whose
vocab.txt, config.LEARNED_VOCABULARY_ASSET, is also written beside the
SavedModel and its TFLite files).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import List, Optional, Sequence

import tensorflow as tf

from models import bpe
from models import config
from models import decoding
from models import tokenizer
from models import wordpiece

PRESET_ASSET = "moonshine_preset.json"
# What the Trainer writes into its model artifact: TF-checkpoint weights of
# the Moonshine model, and the preset (training part) they were trained with.
TRAINED_WEIGHTS = "weights"
TRAINED_PRESET = "trained_preset.json"
# Training's record, copied next to the serving model for the reports.
HISTORY_FILE = "history.json"
LOSS_CURVE_FILE = "loss_curve.png"
# What the transcribe signature's input checks say (the TFLite host path,
# models/tflite.py, says the same).
AUDIO_RANK_MESSAGE = "audio must be float32 [batch, samples]"
ROW_COUNT_MESSAGE = ("num_samples needs one length per audio row "
                     "(audio must be float32 [batch, samples])")
EMPTY_AUDIO_MESSAGE = "empty audio: every row needs samples"
TOO_LONG_MESSAGE = "num_samples exceeds the audio length"
NON_FINITE_MESSAGE = "audio contains NaN or Inf samples"


@dataclasses.dataclass(frozen=True)
class ExportArgs:
    """What the ModelExporter hands `export_fn`."""
    trained_model_dir: str  # the Trainer's Format-Serving dir
    transform_output: str  # Transform's graph
    serving_model_dir: str  # where the SavedModel goes
    decode: config.DecodeConfig


def save_trained(model, preset: config.Preset, directory: str) -> None:
    """The Trainer's output: the weights and the preset that built them."""
    model.save_weights(os.path.join(directory, TRAINED_WEIGHTS))
    with tf.io.gfile.GFile(os.path.join(directory, TRAINED_PRESET), "w") as f:
        json.dump(config.training_dict(preset), f, indent=2)


def load_trained(directory: str, with_ctc_head: bool = False):
    """(Moonshine model with the saved weights, its preset) of save_trained;
    with_ctc_head keeps the CTC head training saved (CTC decoding)."""
    from models import moonshine

    with tf.io.gfile.GFile(os.path.join(directory, TRAINED_PRESET)) as f:
        preset = config.preset_from_dict(json.load(f))
    if with_ctc_head and not preset.train.ctc_weight > 0:
        raise ValueError(
            f"{directory}: trained with ctc_weight {preset.train.ctc_weight}, "
            "so its CTC head never learned: decode with the attention "
            "decoder")
    model = moonshine.Moonshine(preset.model, with_ctc_head=with_ctc_head)
    status = model.load_weights(os.path.join(directory, TRAINED_WEIGHTS))
    if with_ctc_head:
        try:
            status.assert_existing_objects_matched()
        except AssertionError:
            # A model trained before the CTC head was saved with it would
            # otherwise decode with a random head.
            raise ValueError(
                f"{directory}: its weights hold no trained CTC head: decode "
                "with the attention decoder, or train it again") from None
    status.expect_partial()
    return model, preset


def _audio_to_raw_feature(audio: tf.Tensor, num_samples: tf.Tensor, spec):
    """A dense padded feature (audio, or bytes) as the parsed form
    Transform's raw spec expects."""
    ragged = tf.RaggedTensor.from_tensor(audio, lengths=num_samples)
    if isinstance(spec, tf.io.FixedLenFeature):
        return audio
    if isinstance(spec, tf.io.RaggedFeature):
        return ragged
    return ragged.to_sparse()


def raw_audio_features(audio: tf.Tensor, num_samples: tf.Tensor,
                       raw_spec) -> dict:
    """Float audio [batch, samples] as the raw features of the Transform
    graph: the samples, and, where the schema has them, empty PCM bytes (the
    graph takes either encoding, preprocessing.raw_audio)."""
    raw = {config.AUDIO_KEY: _audio_to_raw_feature(
        audio, num_samples, raw_spec[config.AUDIO_KEY])}
    if config.AUDIO_PCM_KEY in raw_spec:
        no_pcm = tf.fill(tf.stack([tf.size(num_samples), 2]), "")
        raw[config.AUDIO_PCM_KEY] = _audio_to_raw_feature(
            no_pcm, tf.zeros_like(num_samples), raw_spec[config.AUDIO_PCM_KEY])
    return raw


def tf_detokenizer(vocabulary: str,
                   learned_pieces: Optional[Sequence[str]] = None):
    """The vocabulary's in-graph decoder: token ids [B, N] -> text [B]
    (the learned vocabulary's needs its pieces, `learned_pieces_in`)."""
    if vocabulary == config.MOONSHINE_BPE_VOCABULARY:
        return bpe.tf_decode
    if vocabulary == config.LEARNED_VOCABULARY:
        if learned_pieces is None:
            raise ValueError(
                f"vocabulary {vocabulary!r} decodes with the pieces in its "
                f"{config.LEARNED_VOCABULARY_ASSET}, and none was found")
        return functools.partial(wordpiece.tf_decode,
                                 vocab=list(learned_pieces))
    return tokenizer.tf_decode


def learned_pieces_in(directory: str) -> Optional[List[str]]:
    """The learned vocabulary's pieces from the vocab.txt that
    export_serving_model writes beside a model, or None if there is none."""
    path = os.path.join(directory, config.LEARNED_VOCABULARY_ASSET)
    return wordpiece.read_pieces(path) if tf.io.gfile.exists(path) else None


def learned_vocabulary_file(tf_transform_output) -> Optional[str]:
    """The vocab.txt Transform learned, or None (another vocabulary)."""
    return tf_transform_output.vocabulary_file_by_name(
        config.LEARNED_VOCABULARY_ASSET)


def checked_audio(audio: tf.Tensor, num_samples: tf.Tensor):
    """The signature's inputs, checked before anything reads them: a clear
    message rather than an out-of-bounds slice deep in the Transform graph."""
    num_samples = tf.cast(num_samples, tf.int64)
    tf.debugging.assert_rank(audio, 2, message=AUDIO_RANK_MESSAGE)
    tf.debugging.assert_rank(num_samples, 1, message=(
        "num_samples must be int64 [batch]"))
    # A loaded signature can still bind audio of another rank (TF's
    # fallback binding): the row count check comes first and says so.
    rows = tf.debugging.assert_equal(
        tf.shape(num_samples, out_type=tf.int64)[0],
        tf.shape(audio, out_type=tf.int64)[0],
        message=ROW_COUNT_MESSAGE)
    with tf.control_dependencies([rows]):
        checks = [
            tf.debugging.assert_positive(
                num_samples, message=EMPTY_AUDIO_MESSAGE),
            tf.debugging.assert_less_equal(
                num_samples, tf.shape(audio, out_type=tf.int64)[1],
                message=TOO_LONG_MESSAGE),
        ]
    with tf.control_dependencies(checks):
        audio = tf.debugging.check_numerics(audio, NON_FINITE_MESSAGE)
    return audio, num_samples


class MoonshineServingModule(tf.Module):
    """Tracks the model and the Transform layer so both are saved."""

    def __init__(self, model, tf_transform_output, preset: config.Preset):
        super().__init__(name="moonshine_serving")
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._raw_spec = tf_transform_output.raw_feature_spec()
        self._front_end = preset.model.front_end
        self._decode = preset.decode
        learned = learned_vocabulary_file(tf_transform_output)
        self._detokenize = tf_detokenizer(
            preset.model.vocabulary,
            wordpiece.read_pieces(learned) if learned else None)

    def _model_inputs(self, transformed):
        """The front end's padded input [B, units(, channels)] and lengths."""
        front = self._front_end
        lengths = tf.cast(transformed[front.length_key], tf.int64)
        flat = transformed[front.feature_key]
        if isinstance(flat, tf.SparseTensor):
            flat = tf.RaggedTensor.from_sparse(flat)
        values = flat.flat_values
        if front.channels is not None:
            values = tf.reshape(values, [-1, front.channels])
        rows = tf.RaggedTensor.from_row_lengths(values, lengths)
        return rows.to_tensor(0.0), tf.cast(lengths, tf.int32)

    def _transcribe(self, audio: tf.Tensor, num_samples: tf.Tensor):
        audio, num_samples = checked_audio(audio, num_samples)
        transformed = self.tft_layer(raw_audio_features(
            audio, num_samples, self._raw_spec))
        features, lengths = self._model_inputs(transformed)
        encoded, encoded_lengths = self.model.encode(features, lengths)
        seconds = tf.cast(num_samples, tf.float32) / float(config.SAMPLE_RATE)
        token_ids = self._decode_tokens(
            encoded, encoded_lengths,
            decoding.max_tokens_for_duration(seconds))
        return {config.TEXT_OUTPUT_KEY: self._detokenize(token_ids),
                config.TOKENS_OUTPUT_KEY: tf.cast(token_ids, tf.int32)}

    def _decode_tokens(self, encoded, encoded_lengths, max_tokens):
        if self._decode.method == config.CTC_DECODING:
            return decoding.ctc_best_path(self.model.ctc_logits(encoded),
                                          encoded_lengths)
        if self._decode.beam_width == 1:
            return decoding.greedy_decode(self.model, encoded, encoded_lengths,
                                          max_tokens)
        return decoding.beam_search_decode(
            self.model, encoded, encoded_lengths, max_tokens,
            beam_width=self._decode.beam_width,
            length_penalty=self._decode.length_penalty)

    # No autograph: nothing here branches on tensors (decoding builds its
    # own tf.while_loop), and converting would transpile tf_keras's call
    # code and the Transform layer's: most of the export's time.
    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="audio"),
        tf.TensorSpec([None], tf.int64, name="num_samples")])
    def transcribe(self, audio, num_samples):
        return self._transcribe(audio, num_samples)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, serialized):
        """Raw examples, their audio in either encoding (the ExampleGen's
        PCM bytes or float samples), decoded as Transform decodes it."""
        from models import preprocessing

        parsed = tf.io.parse_example(serialized, {
            config.AUDIO_KEY: tf.io.VarLenFeature(tf.float32),
            config.AUDIO_PCM_KEY: tf.io.VarLenFeature(tf.string)})
        return self._transcribe(*preprocessing.raw_audio(parsed))


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
    # The learned vocabulary's model, for the TFLite files' host decoding and
    # for users: the graph itself decodes with constants.
    learned = learned_vocabulary_file(tf_transform_output)
    if learned:
        tf.io.gfile.copy(learned, os.path.join(
            export_dir, config.LEARNED_VOCABULARY_ASSET), overwrite=True)
    return export_dir


def export_fn(args: ExportArgs) -> None:
    """ModelExporter entry point: the serving SavedModel of a trained model,
    decoding as args.decode says, its TFLite files (config.TFLITE_FILES)
    and training's history and loss curve."""
    import tensorflow_transform as tft

    from models import tflite

    model, preset = load_trained(
        args.trained_model_dir,
        with_ctc_head=args.decode.method == config.CTC_DECODING)
    preset = dataclasses.replace(preset, decode=args.decode)
    tft_output = tft.TFTransformOutput(args.transform_output)
    export_serving_model(model, tft_output, preset, args.serving_model_dir)
    # The same weights for phones and boards, pushed with the SavedModel.
    tflite.export_tflite(model, tft_output, preset, args.serving_model_dir)
    for name in (HISTORY_FILE, LOSS_CURVE_FILE):
        source = os.path.join(args.trained_model_dir, name)
        if tf.io.gfile.exists(source):
            tf.io.gfile.copy(source, os.path.join(args.serving_model_dir,
                                                  name), overwrite=True)
