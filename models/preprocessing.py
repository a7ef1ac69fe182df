"""Transform's `preprocessing_fn`: raw 16 kHz audio and transcripts in, model features out.

The same graph runs in Beam over the training data (where the analyzers
compute the log-mel normalisation statistics) and inside the serving
signature (where only the audio branch is needed and the transcript branch is
pruned away), so features cannot skew between training and serving.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from models import config
from models import features
from models import tokenizer

# Keeps the z-score finite for a mel bin that never varies (e.g. digital silence).
_VARIANCE_EPSILON = 1e-5


def _to_dense_1d(x: tf.Tensor, default) -> tf.Tensor:
    """A single-valued feature as a [batch] tensor, whatever its parsed form."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value=default)
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default)
    return tf.reshape(x[:, :1] if x.shape.rank == 2 else x, [-1])


def _audio_batch(audio) -> tuple[tf.Tensor, tf.Tensor]:
    """Variable-length audio as a zero-padded [batch, samples] tensor and lengths."""
    if isinstance(audio, tf.SparseTensor):
        audio = tf.RaggedTensor.from_sparse(audio)
    if isinstance(audio, tf.RaggedTensor):
        return audio.to_tensor(0.0), tf.cast(audio.row_lengths(), tf.int64)
    audio = tf.convert_to_tensor(audio)
    batch = tf.shape(audio, out_type=tf.int64)
    return audio, tf.fill(batch[:1], batch[1])


def _flatten_frames(values: tf.Tensor, num_frames: tf.Tensor) -> tf.SparseTensor:
    """[batch, frames, bins] padded -> varlen [batch, frames * bins] without padding.

    Transform outputs must have fully known non-batch dimensions or be sparse;
    a flat varlen feature plus `num_frames` is the most portable encoding.
    """
    ragged = tf.RaggedTensor.from_tensor(values, lengths=num_frames)
    flat = tf.RaggedTensor.from_row_lengths(
        tf.reshape(ragged.flat_values, [-1]),
        ragged.row_lengths() * tf.cast(tf.shape(values)[2], tf.int64))
    return flat.to_sparse()


def log_mel_features(audio, analyze: bool = True):
    """Normalised log-mel from raw audio: (varlen flat log_mel, num_frames).

    The per-bin mean and variance are TFT analyzers over every valid frame of
    the analysed split; at serving they are constants baked into the graph.
    """
    samples, num_samples = _audio_batch(audio)
    log_mel, num_frames = features.log_mel_spectrogram(samples, num_samples)
    valid = tf.RaggedTensor.from_tensor(log_mel, lengths=num_frames).flat_values
    mean = tft.mean(valid, reduce_instance_dims=False, name="log_mel_mean")
    variance = tft.var(valid, reduce_instance_dims=False, name="log_mel_var")
    normalised = (log_mel - mean) * tf.math.rsqrt(variance + _VARIANCE_EPSILON)
    return _flatten_frames(normalised, num_frames), num_frames


def preprocessing_fn(inputs, custom_config=None):
    """TFT entry point (referenced by dotted path from the pipeline)."""
    outputs = {}
    log_mel, num_frames = log_mel_features(inputs[config.AUDIO_KEY])
    outputs[config.LOG_MEL_KEY] = log_mel
    outputs[config.NUM_FRAMES_KEY] = num_frames

    transcript = _to_dense_1d(inputs[config.TRANSCRIPT_KEY], b"")
    tokens = tokenizer.tf_encode(transcript)
    outputs[config.TOKENS_KEY] = tokens.to_sparse()
    outputs[config.NUM_TOKENS_KEY] = tf.cast(tokens.row_lengths(), tf.int64)

    # Carried through so the Trainer can report and bucket without the raw data.
    outputs[config.UTTERANCE_ID_KEY] = _to_dense_1d(
        inputs[config.UTTERANCE_ID_KEY], b"")
    outputs[config.TRANSCRIPT_KEY] = transcript
    outputs[config.DURATION_KEY] = tf.cast(
        _to_dense_1d(inputs[config.DURATION_KEY], 0.0), tf.float32)
    return outputs
