"""Word and character error rates, in Python and as TFMA metrics.

Conventions (see the field notes, "WER conventions"):
- Text is scored as LibriSpeech writes it, only case-folded and with runs of
  whitespace collapsed (`normalize_transcript`). Apostrophes are kept: "DON'T"
  and "DONT" are different words.
- Rates are corpus-level: total edits (substitutions + deletions + insertions)
  over total reference words (characters), never a mean of per-utterance
  rates. Characters include the single spaces between words, as jiwer's CER.
- Empty references are allowed: an empty reference contributes its
  hypothesis' length as insertions and nothing to the denominator. If the
  whole corpus has no reference tokens the rate is 0.0 when there are no
  edits and +inf otherwise (so an upper-bound threshold fails rather than
  passes or sees a NaN).

TFMA: `WordErrorRate` and `CharacterErrorRate` are `tfma.metrics.Metric`s in
the style of TFMA 0.47's `bleu.py`/`rouge.py`: a Beam `CombineFn` sums edits and
reference lengths over the whole slice (exact, mergeable across workers) and
returns a Python float, so `GenericValueThreshold`/`GenericChangeThreshold`
apply. Labels are the string transcripts (`ModelSpec.label_key`, a feature) and
predictions the decoded strings (`ModelSpec.prediction_key`, the serving
output `config.TEXT_OUTPUT_KEY`). Reference them from an `EvalConfig` with
`tfma.MetricConfig(class_name='WordErrorRate', module='models.metrics')`:
TFMA 0.47 imports `module` and accepts any `tfma.metrics.Metric` subclass found
there (no Keras metric needed). They are also registered with TFMA, so
`class_name` alone works once this module has been imported. `eval_config()`
builds the pipeline's Evaluator config. `MeanDecodedLength` (characters per
normalized hypothesis) uses the same combiner.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from rapidfuzz.distance import Levenshtein
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2

from models import config

# How EvalConfigs name this module (importable in the pipeline image).
METRICS_MODULE = "models.metrics"
WER_NAME = "wer"
CER_NAME = "cer"
DECODED_LENGTH_NAME = "mean_decoded_length"
DIVERSITY_NAME = "output_diversity"
# Float noise allowed on top of the no-regression margin.
_CHANGE_TOLERANCE = 1e-10
_WORD = "word"
_CHAR = "char"

Text = Union[str, bytes]


# --- Python -----------------------------------------------------------------
def edit_distance(ref_tokens: Sequence[Any], hyp_tokens: Sequence[Any]) -> int:
    """Levenshtein distance (unit costs) between two sequences of hashables.

    Uses rapidfuzz (jiwer's own backend), which accepts strings and lists of
    hashable tokens such as words.
    """
    return int(Levenshtein.distance(list(ref_tokens), list(hyp_tokens)))


def _to_str(text: Any) -> str:
    if isinstance(text, np.ndarray):
        if text.size != 1:
            raise ValueError(
                f"expected a single transcript, got an array of shape {text.shape}")
        text = text.reshape(-1)[0]
    if isinstance(text, (bytes, np.bytes_)):
        return bytes(text).decode("utf-8", errors="replace")
    if text is None:
        return ""
    return str(text)


def normalize_transcript(text: Text) -> str:
    """Case-fold and collapse whitespace; keeps apostrophes and other characters."""
    return " ".join(_to_str(text).casefold().split())


def _tokens(text: Text, unit: str) -> List[str]:
    normalized = normalize_transcript(text)
    if unit == _WORD:
        return normalized.split()
    if unit == _CHAR:
        return list(normalized)
    raise ValueError(f"unknown unit {unit!r}")


def _edits_and_length(ref: Text, hyp: Text, unit: str) -> Tuple[int, int]:
    ref_tokens, hyp_tokens = _tokens(ref, unit), _tokens(hyp, unit)
    return edit_distance(ref_tokens, hyp_tokens), len(ref_tokens)


def _decoded_length(ref: Text, hyp: Text, unit: str) -> Tuple[int, int]:
    """(hypothesis length, 1): summed and divided, the mean decoded length."""
    del ref
    return len(_tokens(hyp, unit)), 1


def _rate(edits: float, length: float) -> float:
    if length > 0:
        return float(edits) / float(length)
    return 0.0 if edits == 0 else float("inf")


def _corpus_rate(refs: Sequence[Text], hyps: Sequence[Text], unit: str) -> float:
    if isinstance(refs, (str, bytes)) or isinstance(hyps, (str, bytes)):
        raise TypeError("refs and hyps must be sequences of transcripts, not one string")
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(
            f"{len(refs)} references but {len(hyps)} hypotheses; they must pair up")
    edits = length = 0
    for ref, hyp in zip(refs, hyps):
        e, n = _edits_and_length(ref, hyp, unit)
        edits += e
        length += n
    return _rate(edits, length)


def word_error_rate(refs: Sequence[Text], hyps: Sequence[Text]) -> float:
    """Corpus WER: total word edits / total reference words."""
    return _corpus_rate(refs, hyps, _WORD)


def char_error_rate(refs: Sequence[Text], hyps: Sequence[Text]) -> float:
    """Corpus CER: total character edits / total reference characters."""
    return _corpus_rate(refs, hyps, _CHAR)


# --- TFMA -------------------------------------------------------------------
@dataclasses.dataclass
class _Accumulator:
    edits: float = 0.0  # example-weighted when the metric is weighted
    reference_length: float = 0.0
    num_examples: int = 0


# What a combiner sums per example: (numerator, denominator) of its ratio.
_SCORES = {WER_NAME: (_edits_and_length, _WORD),
           CER_NAME: (_edits_and_length, _CHAR),
           DECODED_LENGTH_NAME: (_decoded_length, _CHAR)}


class _TranscriptCombiner(beam.CombineFn):
    """Base of the combiners: the (reference, hypothesis, weight) of each
    example of TFMA's standard metric inputs."""

    def __init__(self, key: metric_types.MetricKey,
                 eval_config: Optional[config_pb2.EvalConfig],
                 model_name: str, output_name: str, example_weighted: bool):
        self._key = key
        self._eval_config = eval_config
        self._model_name = model_name
        self._output_name = output_name
        self._example_weighted = example_weighted

    def _transcripts(self, element: metric_types.StandardMetricInputs):
        for labels, predictions, weights in metric_util.to_label_prediction_example_weight(
                element,
                eval_config=self._eval_config,
                model_name=self._model_name,
                output_name=self._output_name,
                example_weighted=self._example_weighted,
                flatten=False,
                squeeze=False,
                require_single_example_weight=True):
            yield (_single_text(labels, "label (reference transcript)"),
                   _single_text(predictions, "prediction (decoded text)"),
                   float(np.asarray(weights).reshape(-1)[0]))


class _ErrorRateCombiner(_TranscriptCombiner):
    """Sums a per-example (numerator, denominator) pair; outputs their ratio.

    For WER/CER the pair is (edit distance, reference length); for the mean
    decoded length it is (hypothesis characters, 1).
    """

    def __init__(self, score: str, *args):
        super().__init__(*args)
        self._score, self._unit = _SCORES[score]

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, accumulator: _Accumulator,
                  element: metric_types.StandardMetricInputs) -> _Accumulator:
        for ref, hyp, weight in self._transcripts(element):
            edits, length = self._score(ref, hyp, self._unit)
            accumulator.edits += weight * edits
            accumulator.reference_length += weight * length
            accumulator.num_examples += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        result = _Accumulator()
        for acc in accumulators:
            result.edits += acc.edits
            result.reference_length += acc.reference_length
            result.num_examples += acc.num_examples
        return result

    def extract_output(self, accumulator: _Accumulator) -> Dict[metric_types.MetricKey, float]:
        return {self._key: _rate(accumulator.edits, accumulator.reference_length)}


class _DiversityCombiner(_TranscriptCombiner):
    """Distinct normalized hypotheses over distinct references (exact: the
    accumulator holds the two sets, a few MB for a LibriSpeech dev set)."""

    def create_accumulator(self):
        return set(), set()

    def add_input(self, accumulator, element):
        references, hypotheses = accumulator
        for ref, hyp, _ in self._transcripts(element):
            references.add(normalize_transcript(ref))
            hypotheses.add(normalize_transcript(hyp))
        return accumulator

    def merge_accumulators(self, accumulators):
        references, hypotheses = set(), set()
        for refs, hyps in accumulators:
            references |= refs
            hypotheses |= hyps
        return references, hypotheses

    def extract_output(self, accumulator) -> Dict[metric_types.MetricKey, float]:
        references, hypotheses = accumulator
        # Capped: differing transcripts of one reference are no merit.
        return {self._key: min(1.0, len(hypotheses) / max(len(references),
                                                           1))}


def _single_text(value: Any, what: str) -> str:
    """One transcript from TFMA's label/prediction value (str, bytes, arrays of 1)."""
    if value is None:
        return ""
    array = np.asarray(value, dtype=object).reshape(-1)
    if array.size == 0:
        return ""
    if array.size > 1:
        raise ValueError(
            f"WER/CER expect one string {what} per example, got {array.size}: "
            f"{array[:4]!r}. Check ModelSpec.label_key / prediction_key.")
    item = array[0]
    if not isinstance(item, (str, bytes, np.str_, np.bytes_)):
        raise ValueError(
            f"WER/CER expect a string {what}, got {type(item).__name__} {item!r}. "
            "Check ModelSpec.label_key / prediction_key.")
    return _to_str(item)


def _error_rate_computations(
        score: str,
        name: str,
        eval_config: Optional[config_pb2.EvalConfig] = None,
        model_names: Optional[List[str]] = None,
        output_names: Optional[List[str]] = None,
        sub_keys: Optional[List[Optional[metric_types.SubKey]]] = None,
        example_weighted: bool = False) -> metric_types.MetricComputations:
    if any(sub_key is not None for sub_key in (sub_keys or [])):
        raise ValueError(
            f"{name}: error rates of transcripts have no class sub-keys; remove "
            f"binarize/top-k settings from its MetricsSpec (got {sub_keys})")
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(
                name=name, model_name=model_name, output_name=output_name,
                example_weighted=example_weighted)
            args = (key, eval_config, model_name, output_name,
                    example_weighted)
            computations.append(metric_types.MetricComputation(
                keys=[key],
                preprocessors=None,  # the standard labels/predictions/weights
                combiner=(_DiversityCombiner(*args) if score == DIVERSITY_NAME
                          else _ErrorRateCombiner(score, *args))))
    return computations


def _word_error_rate(name: str = WER_NAME, eval_config=None, model_names=None,
                     output_names=None, sub_keys=None, example_weighted=False):
    return _error_rate_computations(WER_NAME, name, eval_config, model_names,
                                    output_names, sub_keys, example_weighted)


def _char_error_rate(name: str = CER_NAME, eval_config=None, model_names=None,
                     output_names=None, sub_keys=None, example_weighted=False):
    return _error_rate_computations(CER_NAME, name, eval_config, model_names,
                                    output_names, sub_keys, example_weighted)


def _output_diversity(name: str = DIVERSITY_NAME, eval_config=None,
                      model_names=None, output_names=None, sub_keys=None,
                      example_weighted=False):
    return _error_rate_computations(DIVERSITY_NAME, name, eval_config,
                                    model_names, output_names, sub_keys,
                                    example_weighted)


def _mean_decoded_length(name: str = DECODED_LENGTH_NAME, eval_config=None,
                         model_names=None, output_names=None, sub_keys=None,
                         example_weighted=False):
    return _error_rate_computations(DECODED_LENGTH_NAME, name, eval_config,
                                    model_names, output_names, sub_keys,
                                    example_weighted)


class WordErrorRate(metric_types.Metric):
    """Corpus-level word error rate of decoded text against transcripts (lower is better)."""

    def __init__(self, name: str = WER_NAME):
        super().__init__(_word_error_rate, name=name)


class CharacterErrorRate(metric_types.Metric):
    """Corpus-level character error rate (lower is better)."""

    def __init__(self, name: str = CER_NAME):
        super().__init__(_char_error_rate, name=name)


class MeanDecodedLength(metric_types.Metric):
    """Mean characters per decoded (normalized) hypothesis.

    Next to the WER it tells a model that deletes (short output) from one that
    babbles (long output); compare with the references' length.
    """

    def __init__(self, name: str = DECODED_LENGTH_NAME):
        super().__init__(_mean_decoded_length, name=name)


class OutputDiversity(metric_types.Metric):
    """Distinct decoded texts per distinct reference transcript, at most 1
    (1 for a model whose outputs differ wherever the references do).

    The gate that a model whose output does not depend on its input (empty,
    or one constant text) fails, whatever its WER: see eval_config.
    """

    def __init__(self, name: str = DIVERSITY_NAME):
        super().__init__(_output_diversity, name=name)


metric_types.register_metric(WordErrorRate)
metric_types.register_metric(OutputDiversity)
metric_types.register_metric(CharacterErrorRate)
metric_types.register_metric(MeanDecodedLength)


def default_slicing_specs() -> List[tfma.SlicingSpec]:
    """The overall slice, then one slice per value of each config.EVAL_SLICE_KEYS."""
    return [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[key])
                                   for key in config.EVAL_SLICE_KEYS]


def upper_bound(bound: float) -> tfma.MetricThreshold:
    """metric <= bound (TFMA's value thresholds are inclusive)."""
    return tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        upper_bound={"value": float(bound)}))


def lower_bound(bound: float) -> tfma.MetricThreshold:
    """metric >= bound."""
    return tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        lower_bound={"value": float(bound)}))


def wer_threshold(wer_upper_bound: float,
                  max_wer_regression: float = config.MAX_WER_REGRESSION,
                  ) -> tfma.MetricThreshold:
    """The blessing gate on WER: an absolute bound and no regression."""
    if max_wer_regression < 0:
        raise ValueError(
            f"max_wer_regression must be >= 0, got {max_wer_regression}")
    threshold = upper_bound(wer_upper_bound)
    threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.LOWER_IS_BETTER,
        absolute={"value": float(max_wer_regression) + _CHANGE_TOLERANCE}))
    return threshold


def _overall_only(threshold: tfma.MetricThreshold):
    """Gated on the overall slice only: a speaker, subset or duration slice
    of a few utterances is reported, not a reason to refuse."""
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                         threshold=threshold)]


def eval_config(wer_upper_bound: float,
                cer_upper_bound: float,
                label_key: str = config.TRANSCRIPT_KEY,
                prediction_key: str = config.TEXT_OUTPUT_KEY,
                slicing: Optional[Sequence[tfma.SlicingSpec]] = None,
                signature_name: str = "serving_default",
                max_wer_regression: float = config.MAX_WER_REGRESSION,
                ) -> tfma.EvalConfig:
    """The Evaluator's config: WER and CER (gated), example count, decoded
    length.

    WER must be <= `wer_upper_bound` and CER <= `cer_upper_bound` (absolute
    blessing bounds: an empty-output model scores 1.0 on both), the output
    diversity >= config.MIN_OUTPUT_DIVERSITY (a model whose output does not
    depend on its input fails it, whatever its error rates) and, when TFX
    gives the Evaluator a baseline model, WER at most `max_wer_regression`
    above the baseline's (`GenericChangeThreshold`, LOWER_IS_BETTER, plus
    1e-10 of float noise; TFMA skips change thresholds when there is no
    baseline, so a first run is judged on the bounds alone): on the overall
    slice only. The serving signature takes raw serialized tf.Examples, so no
    preprocessing functions are configured. `slicing` defaults to
    `default_slicing_specs()`: overall, by subset, speaker and duration
    bucket.
    """
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=signature_name,
            label_key=label_key,
            prediction_key=prediction_key)],
        slicing_specs=(list(slicing) if slicing
                       else default_slicing_specs()),
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(
                class_name=WordErrorRate.__name__, module=METRICS_MODULE,
                per_slice_thresholds=_overall_only(wer_threshold(
                    wer_upper_bound, max_wer_regression))),
            tfma.MetricConfig(
                class_name=CharacterErrorRate.__name__, module=METRICS_MODULE,
                per_slice_thresholds=_overall_only(
                    upper_bound(cer_upper_bound))),
            tfma.MetricConfig(class_name=MeanDecodedLength.__name__,
                              module=METRICS_MODULE),
            tfma.MetricConfig(
                class_name=OutputDiversity.__name__, module=METRICS_MODULE,
                per_slice_thresholds=_overall_only(lower_bound(
                    config.MIN_OUTPUT_DIVERSITY))),
        ])])
