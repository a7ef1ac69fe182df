"""Transform's `preprocessing_fn`: raw 16 kHz audio and transcripts in, model features out.

The same graph runs in Beam over the training data (where the analyzers
compute the log-mel normalisation statistics) and inside the serving
signature (where only the audio branch is needed and the transcript branch is
pruned away), so features cannot skew between training and serving.

`custom_config` (Transform's) holds, only where they differ from the
defaults (so other runs keep their cache), the model options the features
depend on: see `transform_options`. Every vocabulary gives the same
TOKENS_KEY layout, `<s> ids </s>`: characters are tokenised here, the
learned WordPiece vocabulary is learned on the analysed split and tokenised
here (models/wordpiece.py), the official BPE's ids come from the raw
examples (the ExampleGen writes them, see models/bpe.py).

Besides the features, the analyzers count the training split's input
lengths (`data.LENGTH_COUNTS_VOCABULARY`), from which the Trainer sizes its
epochs without reading the data first.
"""

from __future__ import annotations

import dataclasses
import os
from typing import List

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from models import config
from models import data
from models import features
from models import pcm
from models import tokenizer
from models import wordpiece

# Keeps the z-score finite for a mel bin that never varies (e.g. digital silence).
_VARIANCE_EPSILON = 1e-5

# What Transform must know of a ModelConfig: the fields its features depend on.
_MODEL_OPTIONS = ("vocabulary", "frontend", "n_mels")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(config.ModelConfig)
             if f.name in _MODEL_OPTIONS}


def transform_options(model_config: config.ModelConfig) -> dict:
    """Transform's custom_config for a model config: the fields of
    _MODEL_OPTIONS that differ from ModelConfig's defaults."""
    return {name: getattr(model_config, name) for name in _MODEL_OPTIONS
            if getattr(model_config, name) != _DEFAULTS[name]}


def _model_options(custom_config) -> dict:
    """transform_options' inverse: every _MODEL_OPTIONS field, defaults
    filled in."""
    options = dict(custom_config or {})
    unknown = sorted(set(options) - set(_MODEL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown Transform custom_config keys {unknown}; "
                         f"known: {list(_MODEL_OPTIONS)}")
    return {name: options.get(name, _DEFAULTS[name])
            for name in _MODEL_OPTIONS}


def _to_dense_1d(x: tf.Tensor, default) -> tf.Tensor:
    """A feature of at most one value as a [batch] tensor, `default` where
    an example has none, whatever its parsed form."""
    if isinstance(x, tf.SparseTensor):
        batch = x.dense_shape[0]
        x = tf.sparse.to_dense(tf.sparse.reset_shape(
            x, tf.stack([batch, tf.maximum(x.dense_shape[1], 1)])),
            default_value=default)
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default,
                        shape=[None, 1]) if x.shape.rank == 2 else x
    return tf.reshape(x[:, :1] if x.shape.rank == 2 else x, [-1])


def _ragged(x) -> tf.RaggedTensor:
    """A varlen feature (sparse, ragged or dense [batch, n]) as ragged rows."""
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x)


def _with_sos_eos(ids: tf.RaggedTensor) -> tf.RaggedTensor:
    batch = ids.nrows()
    sos = tf.fill(tf.stack([batch, 1]), tf.constant(config.SOS_ID, tf.int64))
    eos = tf.fill(tf.stack([batch, 1]), tf.constant(config.EOS_ID, tf.int64))
    return tf.concat([sos, tf.cast(ids, tf.int64), eos], axis=1)


class _LearnWordPiece(tft_beam.experimental.PTransformAnalyzer):
    """Batches of transcripts -> the path of the learned pieces' vocab.txt,
    written under the analyzer's temp dir (TFT copies it into the graph's
    assets)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self._vocab_size = vocab_size

    def _train(self, transcripts: List[str]) -> bytes:
        path = os.path.join(self.base_temp_dir, config.LEARNED_VOCABULARY_ASSET)
        tf.io.gfile.makedirs(self.base_temp_dir)
        wordpiece.write_pieces(wordpiece.train(transcripts, self._vocab_size),
                               path)
        return path.encode("utf-8")

    def expand(self, batches):
        return (
            batches
            | "Transcripts" >> beam.FlatMap(
                lambda batch: [t.decode("utf-8", errors="replace")
                               for t in batch[0].reshape(-1)])
            # One trainer sees every transcript: text is small beside audio
            # (LibriSpeech 960 h: ~50 MB).
            | "Collect" >> beam.combiners.ToList()
            | "Train" >> beam.Map(self._train))


def learn_wordpiece(transcripts: tf.Tensor,
                    vocab_size: int = config.LEARNED_VOCAB_SIZE) -> tf.Tensor:
    """TFT analyzer: the pieces [n] of a WordPiece vocabulary of at most
    `vocab_size` learned on the analysed split's transcripts [batch], read
    from the graph's asset config.LEARNED_VOCABULARY_ASSET."""
    (path,) = tft.experimental.ptransform_analyzer(
        inputs=[transcripts], ptransform=_LearnWordPiece(vocab_size),
        output_dtypes=[tf.string], output_shapes=[[]],
        # Before analysis (tracing only): the specials alone.
        output_asset_default_values=["".join(
            p + "\n" for p in wordpiece.SPECIAL_TOKENS).encode("utf-8")],
        name="learn_wordpiece")
    # The file's name in the graph's assets/ is _LearnWordPiece's.
    tft.annotate_asset(config.LEARNED_VOCABULARY_ASSET,
                       config.LEARNED_VOCABULARY_ASSET)
    return tf.strings.split(tf.strings.strip(tf.io.read_file(path)), "\n")


def transcript_tokens(inputs, transcript: tf.Tensor,
                      vocabulary: str = config.CHARACTER_VOCABULARY
                      ) -> tf.RaggedTensor:
    """`<s> ids </s>` per example [batch, (n)] int64, in `vocabulary`."""
    if vocabulary == config.CHARACTER_VOCABULARY:
        return tokenizer.tf_encode(transcript)
    if vocabulary == config.LEARNED_VOCABULARY:
        return _with_sos_eos(wordpiece.tf_encode(
            transcript, learn_wordpiece(transcript)))
    if vocabulary != config.MOONSHINE_BPE_VOCABULARY:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; choose one of "
                         f"{sorted(config.VOCABULARY_SIZES)}")
    key = config.MOONSHINE_BPE_IDS_KEY
    if key not in inputs:
        raise ValueError(
            f"vocabulary {vocabulary!r} needs the raw feature {key!r} in the "
            "schema and the examples: LibriSpeechExampleGen(vocabulary="
            f"{vocabulary!r}) writes it")
    ids = _ragged(inputs[key])
    # An example without ids was ingested for another vocabulary: training
    # on `<s> </s>` alone would fail silently.
    written = tf.debugging.assert_positive(
        ids.row_lengths(), message=(
            f"an example has no {key!r}: ingest with "
            f"LibriSpeechExampleGen(vocabulary={vocabulary!r})"))
    with tf.control_dependencies([written]):
        ids = ids.with_flat_values(tf.identity(ids.flat_values))
    return _with_sos_eos(ids)


def _pcm_planes(x) -> tf.Tensor:
    """The PCM feature as [batch, 2] strings; an example without it (float
    audio instead) gets two empty planes."""
    if isinstance(x, tf.RaggedTensor):
        x = x.to_sparse()
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(tf.sparse.reset_shape(
            x, tf.stack([x.dense_shape[0], 2])), default_value=b"")
    return tf.reshape(x, [-1, 2])


def raw_audio(inputs, rows=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Each example's 16 kHz samples as a zero-padded [batch, samples]
    tensor and their lengths, from whichever encoding the example carries:
    the ExampleGen's PCM bytes (config.AUDIO_PCM_KEY, decoded exactly by
    models/pcm.py) or float samples (config.AUDIO_KEY, which the serving
    signatures pass). A schema may hold only one of the two features.
    `rows` ([batch] bool) keeps only those examples, before decoding."""
    def kept(*tensors):
        if rows is None:
            return tensors
        return tuple(tf.boolean_mask(t, rows) for t in tensors)

    decoded = []
    if config.AUDIO_PCM_KEY in inputs:
        (planes,) = kept(_pcm_planes(inputs[config.AUDIO_PCM_KEY]))
        decoded.append(pcm.tf_decode(planes))
    if config.AUDIO_KEY in inputs:
        decoded.append(kept(*_audio_batch(inputs[config.AUDIO_KEY])))
    if not decoded:
        raise ValueError(f"no audio feature: the raw examples need "
                         f"{config.AUDIO_PCM_KEY!r} or {config.AUDIO_KEY!r}")
    samples, lengths = decoded[0]
    for other, other_lengths in decoded[1:]:
        width = tf.maximum(tf.shape(samples, out_type=tf.int64)[1],
                           tf.shape(other, out_type=tf.int64)[1])

        def padded(x):
            return tf.pad(x, [[0, 0],
                              [0, width - tf.shape(x, out_type=tf.int64)[1]]])
        # Each example carries one encoding; the other is empty.
        use_first = lengths > 0
        samples = tf.where(use_first[:, tf.newaxis], padded(samples),
                           padded(other))
        lengths = tf.where(use_first, lengths, other_lengths)
    return samples, lengths


def _audio_batch(audio) -> tuple[tf.Tensor, tf.Tensor]:
    """Variable-length audio as a zero-padded [batch, samples] tensor and lengths."""
    if isinstance(audio, tf.SparseTensor):
        # Straight to dense (rows are left-aligned, as parsing and
        # RaggedTensor.to_sparse write them): through a RaggedTensor took
        # 5x as long (0.66 against 0.12 ms per audio-second, one thread),
        # on every float batch the serving signatures and training's rooms
        # and noise (models/room.py) pass.
        rows = audio.indices[:, 0]
        lengths = tf.math.unsorted_segment_sum(
            tf.ones_like(rows), rows, audio.dense_shape[0])
        return tf.sparse.to_dense(audio, 0.0), lengths
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
    # validate=False: the lengths hold by construction, and a validation
    # assert, being stateful, would run wherever the graph does, making
    # TFT's analyse pass compute every feature it does not analyse.
    flat = tf.RaggedTensor.from_row_lengths(
        tf.reshape(ragged.flat_values, [-1]),
        ragged.row_lengths() * tf.cast(tf.shape(values)[2], tf.int64),
        validate=False)
    return flat.to_sparse()


def stats_rows(utterance_ids: tf.Tensor,
               every: int = config.LOG_MEL_STATS_EVERY) -> tf.Tensor:
    """[batch] bool: the utterances the log-mel statistics are analysed on,
    those whose number within their chapter ("<speaker>-<chapter>-<n>") is
    a multiple of `every`; an id without that number counts as 0."""
    number = tf.strings.regex_replace(utterance_ids, r"^.*-", "")
    number = tf.strings.to_number(tf.where(
        tf.strings.regex_full_match(number, r"[0-9]{1,18}"), number, "0"),
        tf.int64)
    return tf.equal(number % every, 0)


def log_mel_features(samples, num_samples, n_mels: int = config.N_MELS,
                     stats_audio=None):
    """Normalised log-mel from padded raw audio: (varlen flat log_mel,
    num_frames).

    The per-bin mean and variance are TFT analyzers over every valid frame of
    `stats_audio` ((samples, num_samples) of the utterances they are analysed
    on; by default all of them); at serving they are constants baked into
    the graph, and the statistics' own branch is pruned away with the
    analyzers.
    """
    log_mel, num_frames = features.log_mel_spectrogram(samples, num_samples,
                                                       n_mels=n_mels)
    stats_mel, stats_frames = (log_mel, num_frames) if stats_audio is None \
        else features.log_mel_spectrogram(*stats_audio, n_mels=n_mels)
    valid = tf.RaggedTensor.from_tensor(stats_mel,
                                        lengths=stats_frames).flat_values
    mean = tft.mean(valid, reduce_instance_dims=False, name="log_mel_mean")
    variance = tft.var(valid, reduce_instance_dims=False, name="log_mel_var")
    normalised = normalise_log_mel(log_mel, mean, variance)
    return _flatten_frames(normalised, num_frames), num_frames


def normalise_log_mel(log_mel, mean, variance):
    """Per-bin z-score of log-mel with the analysed statistics (the TFLite
    front end, models/tflite.py, applies the same)."""
    return (log_mel - mean) * tf.math.rsqrt(variance + _VARIANCE_EPSILON)


def waveform_features(samples, num_samples):
    """The waveform front end's input: (varlen samples, num_samples).

    The samples pass unchanged: the official model feeds its conv stem the
    raw [-1, 1] audio (useful-moonshine's `transcribe` loads it with librosa
    and nothing else), and the stem normalises itself (tanh, then GroupNorm
    over each utterance), so any gain normalisation here would only move
    the input away from what published weights were trained on.
    """
    flat = tf.RaggedTensor.from_tensor(samples, lengths=num_samples)
    return tf.cast(flat, tf.float32).to_sparse(), num_samples


def _count_lengths(lengths: tf.Tensor) -> None:
    """Counts the analysed split's input lengths into the vocabulary the
    Trainer reads (data.length_counts): one "<count> <length>" per line."""
    tft.vocabulary(tf.strings.as_string(lengths), store_frequency=True,
                   vocab_filename=data.LENGTH_COUNTS_VOCABULARY,
                   name="count_input_lengths")


def preprocessing_fn(inputs, custom_config=None):
    """TFT entry point (referenced by dotted path from the pipeline)."""
    options = _model_options(custom_config)
    front = config.front_end(options["frontend"], options["n_mels"])
    samples, num_samples = raw_audio(inputs)
    # The analyse pass computes the analyzers' inputs alone: the lengths are
    # counted from the sample counts (no decoding needed: the PCM planes'
    # byte lengths), and only the utterances the statistics are analysed on
    # are decoded and transformed.
    if front.name == config.WAVEFORM_FRONTEND:
        values, lengths = waveform_features(samples, num_samples)
        _count_lengths(num_samples)
    else:
        utterance_ids = _to_dense_1d(inputs[config.UTTERANCE_ID_KEY], b"")
        values, lengths = log_mel_features(
            samples, num_samples, front.channels,
            stats_audio=raw_audio(inputs, stats_rows(utterance_ids)))
        _count_lengths(features.frames_for_samples(num_samples))
    outputs = {front.feature_key: values, front.length_key: lengths}

    transcript = _to_dense_1d(inputs[config.TRANSCRIPT_KEY], b"")
    tokens = transcript_tokens(inputs, transcript, options["vocabulary"])
    outputs[config.TOKENS_KEY] = tokens.to_sparse()
    outputs[config.NUM_TOKENS_KEY] = tf.cast(tokens.row_lengths(), tf.int64)

    # Carried through so the Trainer can report and bucket without the raw data.
    outputs[config.UTTERANCE_ID_KEY] = _to_dense_1d(
        inputs[config.UTTERANCE_ID_KEY], b"")
    outputs[config.TRANSCRIPT_KEY] = transcript
    outputs[config.DURATION_KEY] = tf.cast(
        _to_dense_1d(inputs[config.DURATION_KEY], 0.0), tf.float32)
    return outputs
