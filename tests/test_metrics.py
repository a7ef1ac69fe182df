"""models/metrics.py: WER/CER against jiwer, and through TFMA's own machinery."""

import re

import apache_beam as beam
from apache_beam.testing import util as beam_util
import jiwer
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants as tfma_constants
from tensorflow_model_analysis.evaluators import metrics_plots_and_validations_evaluator
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.slicer import slicer_lib

from models import config, metrics

# (reference, hypothesis) pairs in LibriSpeech style.
PAIRS = [
    ("HE HOPED THERE WOULD BE STEW FOR DINNER",
     "HE HOPED THERE WOULD BE STEW FOR DINNER"),  # exact
    ("I DON'T KNOW", "I DONT KNOW"),  # apostrophe matters: one substitution
    ("THE CAT SAT ON THE MAT", "THE CAT SAT ON MAT"),  # deletion
    ("GO", "GO GO AWAY NOW"),  # insertions
    ("STUFF IT INTO YOU HIS BELLY COUNSELLED HIM",
     "STUFF IT IN TO YOU HIS BELLY COUNSELED HIM"),  # mixed
    ("AND YOU'LL BE", ""),  # empty hypothesis: all deletions
]


def _jiwer_on_normalized(fn, pairs):
    refs = [metrics.normalize_transcript(r) for r, _ in pairs]
    hyps = [metrics.normalize_transcript(h) for _, h in pairs]
    return fn(refs, hyps)


def _dp_edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


# --- Python -----------------------------------------------------------------
def test_edit_distance_on_words_and_characters():
    assert metrics.edit_distance("I DON'T KNOW".split(), "I DONT KNOW".split()) == 1
    assert metrics.edit_distance([], ["A", "B"]) == 2
    assert metrics.edit_distance(["A", "B"], []) == 2
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = list(rng.choice(list("ABC'"), size=rng.integers(0, 9)))
        b = list(rng.choice(list("ABC'"), size=rng.integers(0, 9)))
        assert metrics.edit_distance(a, b) == _dp_edit_distance(a, b)


def test_normalize_transcript_keeps_apostrophes():
    assert metrics.normalize_transcript("  I  Don't\tKNOW \n") == "i don't know"
    assert metrics.normalize_transcript(b"YOU'LL") == "you'll"
    assert metrics.normalize_transcript(np.array([b"A  B"])) == "a b"


@pytest.mark.parametrize("case", range(len(PAIRS)))
def test_single_pairs_equal_jiwer(case):
    pair = [PAIRS[case]]
    assert metrics.word_error_rate(*zip(*pair)) == pytest.approx(
        _jiwer_on_normalized(jiwer.wer, pair))
    assert metrics.char_error_rate(*zip(*pair)) == pytest.approx(
        _jiwer_on_normalized(jiwer.cer, pair))


def test_corpus_rates_equal_jiwer_and_are_not_means():
    refs, hyps = zip(*PAIRS)
    wer = metrics.word_error_rate(refs, hyps)
    cer = metrics.char_error_rate(refs, hyps)
    assert wer == pytest.approx(_jiwer_on_normalized(jiwer.wer, PAIRS))
    assert cer == pytest.approx(_jiwer_on_normalized(jiwer.cer, PAIRS))
    # Corpus level by hand: total edits / total reference words.
    edits = sum(metrics.edit_distance(r.split(), h.split()) for r, h in PAIRS)
    words = sum(len(r.split()) for r, _ in PAIRS)
    assert wer == pytest.approx(edits / words)
    mean_of_rates = np.mean([metrics.word_error_rate([r], [h]) for r, h in PAIRS])
    assert abs(wer - mean_of_rates) > 0.05


def test_case_and_whitespace_do_not_count():
    assert metrics.word_error_rate(["HELLO  WORLD"], ["hello world "]) == 0.0
    assert metrics.char_error_rate(["HELLO  WORLD"], ["hello world "]) == 0.0
    assert metrics.word_error_rate(["DON'T"], ["dont"]) == 1.0


def test_empty_references():
    # Empty references add their hypothesis as insertions, nothing to the denominator.
    assert metrics.word_error_rate(["A B", ""], ["A B", "C"]) == pytest.approx(0.5)
    assert metrics.word_error_rate([""], [""]) == 0.0
    assert metrics.word_error_rate([""], ["A"]) == float("inf")
    assert metrics.char_error_rate(["", " "], ["", ""]) == 0.0
    with pytest.raises(ValueError, match="pair up"):
        metrics.word_error_rate(["A"], [])
    with pytest.raises(TypeError):
        metrics.word_error_rate("A B", "A B")


# --- TFMA: the combiner in a Beam pipeline ---------------------------------
def _extract(ref, hyp, as_bytes=True, prediction_dict=True, weight=None):
    enc = (lambda s: s.encode()) if as_bytes else (lambda s: s)
    prediction = np.array([enc(hyp)], dtype=object)
    if prediction_dict:
        prediction = {config.TEXT_OUTPUT_KEY: prediction,
                      config.TOKENS_OUTPUT_KEY: np.zeros([1, 4], np.int32)}
    extract = {
        tfma_constants.LABELS_KEY: np.array([enc(ref)], dtype=object),
        tfma_constants.PREDICTIONS_KEY: prediction,
        tfma_constants.FEATURES_KEY: None,
        tfma_constants.SLICE_KEY_TYPES_KEY: slicer_lib.slice_keys_to_numpy_array([()]),
    }
    if weight is not None:
        extract[tfma_constants.EXAMPLE_WEIGHTS_KEY] = np.array([weight])
    return extract


def _combine(metric, extracts, eval_config, expected):
    """Runs the metric's combiner over `extracts` in Beam; asserts its one value."""
    computations = metric.computations(eval_config=eval_config)
    assert len(computations) == 1
    computation = computations[0]

    def check(got):
        try:
            assert len(got) == 1
            slice_key, values = got[0]
            assert slice_key == ()
            assert set(values) == set(computation.keys)
            value = values[computation.keys[0]]
            assert isinstance(value, float)
            assert value == pytest.approx(expected), (value, expected)
        except AssertionError as err:
            raise beam_util.BeamAssertException(err)

    with beam.Pipeline() as pipeline:
        result = (pipeline
                  | beam.Create(extracts)
                  | beam.Map(metric_util.to_standard_metric_inputs)
                  | beam.Map(lambda x: ((), x))
                  | beam.CombinePerKey(computation.combiner))
        beam_util.assert_that(result, check)


def test_combiners_in_beam_equal_jiwer():
    eval_config = metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=1.0)
    # Mixed str/bytes and dict/plain predictions, as models and extractors vary.
    extracts = [_extract(r, h, as_bytes=i % 2 == 0, prediction_dict=i % 3 != 0)
                for i, (r, h) in enumerate(PAIRS)]
    pairs = PAIRS * 3
    extracts = extracts * 3
    _combine(metrics.WordErrorRate(), extracts, eval_config,
             _jiwer_on_normalized(jiwer.wer, pairs))
    _combine(metrics.CharacterErrorRate(), extracts, eval_config,
             _jiwer_on_normalized(jiwer.cer, pairs))


def test_mean_decoded_length_in_beam():
    pairs = [("A B", "A B C"), ("X", ""), ("HELLO", "  Hello  World ")]
    expected = np.mean([len(metrics.normalize_transcript(h)) for _, h in pairs])
    _combine(metrics.MeanDecodedLength(), [_extract(r, h) for r, h in pairs],
             metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=1.0), expected)


@pytest.mark.parametrize("hyps,expected", [
    (["A B", "C", "D E F", "G"], 1.0),  # every output its own
    (["", "", "", ""], 1 / 3),  # empty output: one distinct text
    (["THE SAME", "the same", "THE  SAME", "THE SAME"], 1 / 3),  # constant
    (["A", "B", "B", "B"], 2 / 3),
])
def test_output_diversity_in_beam(hyps, expected):
    # Three distinct references (two utterances say the same words).
    refs = ["A B", "C", "D E F", "D E F"]
    _combine(metrics.OutputDiversity(),
             [_extract(r, h) for r, h in zip(refs, hyps)],
             metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=1.0),
             expected)


def test_eval_config_slices_and_regression_margin():
    cfg = metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=0.4, max_wer_regression=0.02)
    assert [list(s.feature_keys) for s in cfg.slicing_specs] == [
        [], [config.SUBSET_KEY], [config.SPEAKER_ID_KEY],
        [config.DURATION_BUCKET_KEY]]
    by_class = {m.class_name: m for m in cfg.metrics_specs[0].metrics}
    assert set(by_class) == {"ExampleCount", "WordErrorRate",
                             "CharacterErrorRate", "MeanDecodedLength",
                             "OutputDiversity"}
    change = by_class["WordErrorRate"].per_slice_thresholds[
        0].threshold.change_threshold
    assert change.absolute.value == pytest.approx(0.02, abs=1e-9)
    diversity = by_class["OutputDiversity"].per_slice_thresholds[0].threshold
    assert diversity.value_threshold.lower_bound.value == (
        config.MIN_OUTPUT_DIVERSITY)
    with pytest.raises(ValueError, match="max_wer_regression"):
        metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=0.4, max_wer_regression=-0.1)


def test_beam_assertions_are_live():
    # Guards the helper above: a wrong expectation must fail the pipeline.
    with pytest.raises(Exception, match="BeamAssertException|approx"):
        _combine(metrics.WordErrorRate(), [_extract("A B", "A C")],
                 metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=1.0), expected=0.25)


def test_combiner_merges_exactly():
    eval_config = metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=1.0)
    combiner = metrics.WordErrorRate().computations(eval_config=eval_config)[0].combiner
    inputs = [metric_util.to_standard_metric_inputs(_extract(r, h)) for r, h in PAIRS]
    parts = []
    for chunk in (inputs[:2], inputs[2:3], inputs[3:]):
        acc = combiner.create_accumulator()
        for x in chunk:
            acc = combiner.add_input(acc, x)
        parts.append(acc)
    (value,) = combiner.extract_output(combiner.merge_accumulators(parts)).values()
    assert value == pytest.approx(_jiwer_on_normalized(jiwer.wer, PAIRS))


def test_combiner_rejects_non_text_predictions():
    eval_config = metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=1.0)
    combiner = metrics.WordErrorRate().computations(eval_config=eval_config)[0].combiner
    bad = _extract("A", "A")
    bad[tfma_constants.PREDICTIONS_KEY] = np.array([[0.1, 0.9]])
    with pytest.raises(ValueError, match="prediction_key|one string"):
        combiner.add_input(combiner.create_accumulator(),
                           metric_util.to_standard_metric_inputs(bad))


# --- TFMA: EvalConfig resolution and the metrics/validations evaluator --------
def test_eval_config_resolves_the_custom_module():
    cfg = metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=0.3, slicing=[
        tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[config.SPEAKER_ID_KEY])])
    (spec,) = cfg.model_specs
    assert (spec.signature_name, spec.label_key, spec.prediction_key) == (
        "serving_default", config.TRANSCRIPT_KEY, config.TEXT_OUTPUT_KEY)
    assert not spec.preprocessing_function_names
    assert len(cfg.slicing_specs) == 2
    by_class = {m.class_name: m for m in cfg.metrics_specs[0].metrics}
    assert by_class["WordErrorRate"].module == "models.metrics"
    (gate,) = by_class["WordErrorRate"].per_slice_thresholds
    assert list(gate.slicing_specs) == [tfma.SlicingSpec()]  # overall only
    threshold = gate.threshold
    assert threshold.value_threshold.upper_bound.value == pytest.approx(0.3)
    assert threshold.change_threshold.direction == tfma.MetricDirection.LOWER_IS_BETTER
    assert threshold.change_threshold.absolute.value == pytest.approx(1e-10)
    # TFMA's own resolver (import module, accept a tfma.metrics.Metric subclass).
    from tensorflow_model_analysis.metrics import metric_specs
    instance = metric_specs.metric_instance(by_class["WordErrorRate"])
    assert isinstance(instance, metrics.WordErrorRate) and instance.name == metrics.WER_NAME
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(
        cfg.metrics_specs, eval_config=cfg)
    assert [spec for spec, _ in thresholds[metric_types.MetricKey(
        name=metrics.WER_NAME)]] == [tfma.SlicingSpec()]


def _evaluate(eval_config, extracts, check_metrics, check_validations):
    def guarded(fn):
        def run(got):
            try:
                fn(got)
            except AssertionError as err:
                raise beam_util.BeamAssertException(err)
        return run

    with beam.Pipeline() as pipeline:
        result = (pipeline
                  | beam.Create(extracts)
                  | metrics_plots_and_validations_evaluator
                  .MetricsPlotsAndValidationsEvaluator(eval_config=eval_config).ptransform)
        beam_util.assert_that(result[tfma_constants.METRICS_KEY],
                              guarded(check_metrics), label="metrics")
        beam_util.assert_that(result[tfma_constants.VALIDATIONS_KEY],
                              guarded(check_validations), label="validations")


@pytest.mark.parametrize("upper_bound, ok", [(0.5, True), (0.1, False)])
def test_evaluator_computes_metrics_and_gates_on_wer(upper_bound, ok):
    pairs = PAIRS * 2
    expected_wer = _jiwer_on_normalized(jiwer.wer, pairs)
    expected_cer = _jiwer_on_normalized(jiwer.cer, pairs)
    assert 0.1 < expected_wer < 0.5
    # No baseline: TFX's Evaluator drops change thresholds (rubber stamp).
    cfg = tfma.utils.update_eval_config_with_defaults(
        metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=upper_bound), has_baseline=False,
        rubber_stamp=True)

    def check_metrics(got):
        ((slice_key, values),) = got
        assert slice_key == ()
        by_name = {k.name: v for k, v in values.items()}
        assert by_name[metrics.WER_NAME] == pytest.approx(expected_wer)
        assert by_name[metrics.CER_NAME] == pytest.approx(expected_cer)
        assert by_name["example_count"] == len(pairs)

    def check_validations(got):
        (validation,) = got
        assert validation.validation_ok is ok, validation
        if not ok:
            (per_slice,) = validation.metric_validations_per_slice
            assert [f.metric_key.name for f in per_slice.failures] == [metrics.WER_NAME]

    _evaluate(cfg, [_extract(r, h) for r, h in pairs], check_metrics, check_validations)


def test_only_the_overall_slice_is_gated():
    """A bad speaker slice is reported; the overall WER decides the blessing."""
    good, bad = ("A B C D", "A B C D"), ("A B C D", "X Y Z W")
    pairs = [good] * 7 + [bad]
    cfg = tfma.utils.update_eval_config_with_defaults(
        metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=0.5), has_baseline=False,
        rubber_stamp=True)
    extracts = []
    for i, (ref, hyp) in enumerate(pairs):
        extract = _extract(ref, hyp)
        extract[tfma_constants.SLICE_KEY_TYPES_KEY] = (
            slicer_lib.slice_keys_to_numpy_array(
                [(), ((config.SPEAKER_ID_KEY, int(i == len(pairs) - 1)),)]))
        extracts.append(extract)

    def check_metrics(got):
        wer = {key: {k.name: v for k, v in values.items()}[metrics.WER_NAME]
               for key, values in got}
        assert wer[()] == pytest.approx(1 / 8)
        assert wer[((config.SPEAKER_ID_KEY, 1),)] == 1.0

    def check_validations(got):  # partial results, merged on writing
        assert got and all(v.validation_ok for v in got), got

    _evaluate(cfg, extracts, check_metrics, check_validations)


# --- TFMA end to end: run_model_analysis over tf.Examples and SavedModels ----
class _EchoModel(tf.Module):
    """serving_default: serialized raw tf.Examples -> {'text': corrupted transcript}.

    Stands in for the Moonshine serving signature (same input and output
    contract); a real model never sees the transcript, this one echoes it with
    `pattern` replaced so the WER is known in advance.
    """

    def __init__(self, pattern, replacement):
        super().__init__()
        self._pattern, self._replacement = pattern, replacement

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, serialized):
        parsed = tf.io.parse_example(serialized, {
            config.TRANSCRIPT_KEY: tf.io.FixedLenFeature([1], tf.string),
            config.AUDIO_KEY: tf.io.VarLenFeature(tf.float32)})
        text = tf.reshape(parsed[config.TRANSCRIPT_KEY], [-1])
        if self._pattern:
            text = tf.strings.regex_replace(text, self._pattern, self._replacement)
        batch = tf.shape(text)[0]
        return {config.TEXT_OUTPUT_KEY: text,
                config.TOKENS_OUTPUT_KEY: tf.zeros([batch, 1], tf.int32)}


def _save(model, path):
    tf.saved_model.save(model, path,
                        signatures={"serving_default": model.serve.get_concrete_function()})
    return path


def _write_examples(path, transcripts):
    with tf.io.TFRecordWriter(path) as writer:
        for i, text in enumerate(transcripts):
            example = tf.train.Example(features=tf.train.Features(feature={
                config.TRANSCRIPT_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[text.encode()])),
                config.AUDIO_KEY: tf.train.Feature(
                    float_list=tf.train.FloatList(value=[0.0] * 8)),
                config.SPEAKER_ID_KEY: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[i % 2])),
            }))
            writer.write(example.SerializeToString())


def test_run_model_analysis_with_baseline(tmp_path):
    refs = [r for r, _ in PAIRS if r] + ["THE END OF THE STORY"]
    data = str(tmp_path / "examples.tfrecord")
    _write_examples(data, refs)
    pattern, replacement = r"\bTHE\b", "A"
    candidate = _save(_EchoModel(pattern, replacement), str(tmp_path / "candidate"))
    baseline = _save(_EchoModel("", ""), str(tmp_path / "baseline"))
    hyps = [re.sub(pattern, replacement, r) for r in refs]
    expected_wer = _jiwer_on_normalized(jiwer.wer, list(zip(refs, hyps)))
    assert 0 < expected_wer < 0.5

    # What TFX's Evaluator does with a baseline: candidate + baseline ModelSpecs.
    cfg = tfma.utils.update_eval_config_with_defaults(
        metrics.eval_config(cer_upper_bound=10.0, wer_upper_bound=0.5, slicing=[
            tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[config.SPEAKER_ID_KEY])]),
        has_baseline=True, rubber_stamp=True)
    shared = [tfma.default_eval_shared_model(candidate, model_name=tfma.CANDIDATE_KEY,
                                             eval_config=cfg),
              tfma.default_eval_shared_model(baseline, model_name=tfma.BASELINE_KEY,
                                             eval_config=cfg)]
    out = str(tmp_path / "eval")
    result = tfma.run_model_analysis(eval_shared_model=shared, eval_config=cfg,
                                     data_location=data, output_path=out)

    assert result is not None
    slices = list(tfma.load_metrics(out))
    assert len(slices) == 3  # overall + two speakers
    (overall,) = [s for s in slices if not s.slice_key.single_slice_keys]
    values = {(kv.key.name, kv.key.model_name, kv.key.is_diff): kv.value.double_value.value
              for kv in overall.metric_keys_and_values}
    assert values[(metrics.WER_NAME, tfma.CANDIDATE_KEY, False)] == pytest.approx(expected_wer)
    assert values[(metrics.WER_NAME, tfma.BASELINE_KEY, False)] == 0.0
    assert values[(metrics.WER_NAME, tfma.CANDIDATE_KEY, True)] == pytest.approx(expected_wer)
    assert values[(metrics.CER_NAME, tfma.CANDIDATE_KEY, False)] == pytest.approx(
        _jiwer_on_normalized(jiwer.cer, list(zip(refs, hyps))))

    # The value bound passes, the no-regression change threshold fails.
    validation = tfma.load_validation_result(out)
    assert not validation.validation_ok
    failures = [f for s in validation.metric_validations_per_slice for f in s.failures]
    assert failures and all(f.metric_key.name == metrics.WER_NAME for f in failures)
    assert all(f.metric_key.is_diff for f in failures)
