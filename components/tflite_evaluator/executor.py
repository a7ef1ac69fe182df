"""Executor of the TFLiteEvaluator: decodes a split with the SavedModel and
with each TFLite variant, one utterance at a time, and scores them alike."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from models import config

EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
EVALUATION_KEY = "evaluation"
SPLIT_KEY = "split"
EVALUATION_FILE = "tflite_evaluation.json"

Utterance = Tuple[str, str, Any]  # (utterance_id, transcript, float32 samples)


def read_split(examples_uri: str, split: str) -> List[Utterance]:
    """Every utterance of one split of raw ExampleGen output, its audio
    decoded as the Transform graph decodes it."""
    import tensorflow as tf
    from models import data
    from models import preprocessing

    spec = {config.AUDIO_KEY: tf.io.VarLenFeature(tf.float32),
            config.AUDIO_PCM_KEY: tf.io.VarLenFeature(tf.string),
            config.TRANSCRIPT_KEY: tf.io.FixedLenFeature([], tf.string),
            config.UTTERANCE_ID_KEY: tf.io.FixedLenFeature([], tf.string)}
    rows: List[Utterance] = []
    for batch in data.split_records(examples_uri, split).batch(16):
        parsed = tf.io.parse_example(batch, spec)
        samples, lengths = preprocessing.raw_audio(parsed)
        for i, n in enumerate(lengths.numpy()):
            rows.append((parsed[config.UTTERANCE_ID_KEY][i].numpy().decode(),
                         parsed[config.TRANSCRIPT_KEY][i].numpy().decode(),
                         samples[i, :n].numpy()))
    return rows


def _tokens_until_eos(ids) -> int:
    ids = list(ids)
    return ids.index(config.EOS_ID) + 1 if config.EOS_ID in ids else len(
        [i for i in ids if i != config.PAD_ID])


def saved_model_decoder(model_dir: str):
    """utterance -> (text, tokens) by the SavedModel's transcribe signature."""
    import tensorflow as tf
    signature = tf.saved_model.load(model_dir).signatures[
        config.TRANSCRIBE_SIGNATURE]

    def decode(audio) -> Tuple[str, int]:
        out = signature(audio=tf.constant(audio[None]),
                        num_samples=tf.constant([len(audio)], tf.int64))
        return (out[config.TEXT_OUTPUT_KEY].numpy()[0].decode(),
                _tokens_until_eos(out[config.TOKENS_OUTPUT_KEY].numpy()[0]))
    return decode


def tflite_decoder(path: str, decode_config: config.DecodeConfig,
                   num_threads: Optional[int] = config.TFLITE_THREADS):
    """utterance -> (text, tokens) by a TFLite file, decoding as the
    SavedModel beside it decodes."""
    import tensorflow as tf
    from models import tflite
    with tf.io.gfile.GFile(path, "rb") as f:
        model = tflite.LiteModel(f.read(), num_threads=num_threads)
    tflite.attach_vocabulary(model, path)  # the preset exported beside it

    def decode(audio) -> Tuple[str, int]:
        tokens = model.tokens(audio, decode_config)
        return model.detokenize(tokens), len(tokens)
    return decode


def saved_model_bytes(model_dir: str) -> int:
    """saved_model.pb and its variables: what serving loads."""
    import tensorflow as tf
    total = tf.io.gfile.stat(os.path.join(model_dir, "saved_model.pb")).length
    for root, _, names in tf.io.gfile.walk(os.path.join(model_dir,
                                                        "variables")):
        total += sum(tf.io.gfile.stat(os.path.join(root, n)).length
                     for n in names)
    return total


def score(decode, utterances: List[Utterance]) -> Dict:
    """WER/CER of one decoder over the utterances, and its latency."""
    from models import metrics
    refs, hyps, seconds, tokens = [], [], 0.0, 0
    decode(utterances[0][2])  # the first call builds kernels: not timed
    for _, transcript, audio in utterances:
        start = time.perf_counter()
        text, n = decode(audio)
        seconds += time.perf_counter() - start
        refs.append(transcript)
        hyps.append(text)
        tokens += n
    audio_seconds = sum(len(u[2]) for u in utterances) / config.SAMPLE_RATE
    return {"wer": metrics.word_error_rate(refs, hyps),
            "cer": metrics.char_error_rate(refs, hyps),
            "examples": len(utterances), "tokens": tokens,
            "audio_seconds": round(audio_seconds, 3),
            # Decoder steps per audio-second: what the vocabulary sets.
            "tokens_per_audio_second": round(tokens / audio_seconds, 3),
            "decode_seconds": round(seconds, 3),
            "real_time_factor": round(seconds / audio_seconds, 5),
            "ms_per_utterance": round(1000 * seconds / len(utterances), 2),
            "ms_per_token": round(1000 * seconds / max(tokens, 1), 3)}


def evaluate_variants(examples_uri: str, split: str, model_dir: str) -> Dict:
    """The SavedModel and every TFLite variant beside it, scored alike."""
    import tensorflow as tf
    from models import tflite

    preset = tflite.exported_preset(os.path.join(model_dir, "saved_model.pb"))
    utterances = read_split(examples_uri, split)
    if not utterances:
        raise ValueError(f"{examples_uri}: split {split!r} has no examples "
                         "to score the TFLite variants on")
    reference = score(saved_model_decoder(model_dir), utterances)
    reference["bytes"] = saved_model_bytes(model_dir)
    variants = {config.SAVED_MODEL_VARIANT: reference}
    for variant, name in config.TFLITE_FILES.items():
        path = os.path.join(model_dir, name)
        result = score(tflite_decoder(path, preset.decode), utterances)
        result["bytes"] = tf.io.gfile.stat(path).length
        result["wer_increase"] = result["wer"] - reference["wer"]
        result["max_wer_increase"] = config.TFLITE_MAX_WER_INCREASE[variant]
        result["within_tolerance"] = bool(
            result["wer_increase"] <= result["max_wer_increase"] + 1e-12)
        variants[variant] = result
    return {"split": split, "decode": {
                "method": preset.decode.method,
                "beam_width": preset.decode.beam_width,
                "length_penalty": preset.decode.length_penalty},
            "audio_seconds": round(sum(len(u[2]) for u in utterances)
                                   / config.SAMPLE_RATE, 2),
            "variants": variants}


class Executor(base_executor.BaseExecutor):
    """Writes EVALUATION_FILE and one custom property per variant figure."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        import tensorflow as tf

        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        evaluation = artifact_utils.get_single_instance(
            output_dict[EVALUATION_KEY])
        result = evaluate_variants(examples.uri, exec_properties[SPLIT_KEY],
                                   path_utils.serving_model_path(model.uri))
        # Kubeflow's launcher hands over the URI only, not a directory.
        tf.io.gfile.makedirs(evaluation.uri)
        with tf.io.gfile.GFile(os.path.join(evaluation.uri, EVALUATION_FILE),
                               "w") as f:
            f.write(json.dumps(result, indent=2, sort_keys=True))
        for variant, figures in result["variants"].items():
            for name in ("wer", "cer", "bytes", "ms_per_token"):
                evaluation.set_float_custom_property(f"{variant}_{name}",
                                                     float(figures[name]))
            if "within_tolerance" in figures:
                evaluation.set_int_custom_property(
                    f"{variant}_within_tolerance",
                    int(figures["within_tolerance"]))
            logging.info("TFLiteEvaluator: %s WER %.4f CER %.4f, %d bytes, "
                         "%.3f ms/token", variant, figures["wer"],
                         figures["cer"], figures["bytes"],
                         figures["ms_per_token"])
