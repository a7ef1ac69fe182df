"""A training recipe probed on the eval split while it trains, outside the
pipeline: how fast the CTC head and the attention decoder learn.

    python benchmarks/recipe_probe.py --pipeline-root outputs/demo/pipeline_root \
        --epochs 12 --eval-every 4 --train '{"batch_seconds": 32}'
    python benchmarks/recipe_probe.py --pipeline-root ... --memorise 3 --utterances 32

It reads a finished run's ExampleGen and Transform artifacts (any `run`
whose Transform completed), builds the demo preset with the given
ModelConfig/TrainConfig overrides (JSON), trains with the Trainer's own
build_trainer and make_dataset, and every `--eval-every` epochs decodes the
eval split greedily twice: with the attention decoder (what the exported
model does) and with the training-only CTC head (collapse repeats, drop
blanks). It prints corpus WER/CER of both and one sample. Each fit() call
ends by swapping in the EMA weights, so EMA is off unless asked for.

`--memorise S` is the sanity check before any recipe question: train, with
augmentation, dropout and label smoothing off, on `--utterances` training
utterances of at most S seconds (or, with -S, at least S) and decode those
same utterances: a working model and data path reach CER near 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tf_keras as keras  # noqa: E402

from models import config, data, decoding, metrics, tokenizer  # noqa: E402
from models import trainer  # noqa: E402

QUIET = dict(ema_momentum=0.0, freq_masks=0, time_masks=0, time_stretch=0.0,
             freq_warp=0.0, label_smoothing=0.0, token_noise=0.0)


def _newest(pattern: str) -> str:
    found = sorted(glob.glob(pattern))
    if not found:
        raise SystemExit(f"recipe_probe: nothing matches {pattern}")
    return found[-1]


def _preset(model_json: str, train_json: str, memorise: bool):
    base = config.get_preset("demo")
    model = dataclasses.replace(base.model, **json.loads(model_json))
    train = dataclasses.replace(base.train, ema_momentum=0.0,
                                **json.loads(train_json))
    if memorise:
        model = dataclasses.replace(model, dropout=0.0)
        train = dataclasses.replace(train, **QUIET)
    return dataclasses.replace(base, model=model, train=train)


def _records(examples: str, split: str, seconds: float, limit: int):
    """Serialized records of a split, filtered by duration (0: all)."""
    out = []
    for record in data.split_records(examples, split).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        duration = example.features.feature[
            config.DURATION_KEY].float_list.value[0]
        if (not seconds or (seconds > 0 and duration <= seconds)
                or (seconds < 0 and duration >= -seconds)):
            out.append(record)
        if limit and len(out) >= limit:
            break
    return out


class Probe:
    """Greedy attention and CTC decoding of fixed utterances."""

    def __init__(self, records, tf_transform_output, front):
        self.model = None  # the trainer, set once it is built
        examples = [tf.train.Example.FromString(r) for r in records]
        self.refs = [e.features.feature[config.TRANSCRIPT_KEY]
                     .bytes_list.value[0].decode() for e in examples]
        self.durations = [e.features.feature[config.DURATION_KEY]
                          .float_list.value[0] for e in examples]
        self.features, self.lengths, self.tokens = data.raw_to_features(
            tf_transform_output, front)(tf.constant(records))

    @tf.function(reduce_retracing=True)
    def _decode(self, features, lengths, durations):
        moonshine = self.model.moonshine
        encoded, encoded_lengths = moonshine.encode(features, lengths)
        tokens = decoding.greedy_decode(
            moonshine, encoded, encoded_lengths,
            decoding.max_tokens_for_duration(durations))
        return tokens, moonshine.ctc_logits(encoded), encoded_lengths

    @staticmethod
    def _text(ids) -> str:
        return tokenizer.decode([i for i in ids if i >= len(
            config.SPECIAL_TOKENS)])

    def run(self, batch: int = 16) -> dict:
        attention, ctc = [], []
        for i in range(0, len(self.refs), batch):
            tokens, logits, lengths = self._decode(
                self.features[i:i + batch].to_tensor(),
                self.lengths[i:i + batch],
                tf.constant(self.durations[i:i + batch]))
            attention += [self._text(row) for row in tokens.numpy()]
            for row, n in zip(logits.numpy(), lengths.numpy()):
                best = row[:n].argmax(-1)
                ctc.append(self._text(
                    [t for j, t in enumerate(best)
                     if j == 0 or t != best[j - 1]]))
        return {"attention_wer": metrics.word_error_rate(self.refs, attention),
                "attention_cer": metrics.char_error_rate(self.refs, attention),
                "ctc_wer": metrics.word_error_rate(self.refs, ctc),
                "ctc_cer": metrics.char_error_rate(self.refs, ctc),
                "sample": {"reference": self.refs[0],
                           "attention": attention[0], "ctc": ctc[0]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline-root", required=True)
    p.add_argument("--model", default="{}", help="ModelConfig overrides")
    p.add_argument("--train", default="{}", help="TrainConfig overrides")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--memorise", type=float, default=0.0, metavar="S")
    p.add_argument("--utterances", type=int, default=32)
    args = p.parse_args(argv)

    root = args.pipeline_root
    tft_output = tft.TFTransformOutput(
        _newest(f"{root}/Transform/transform_graph/*"))
    examples = _newest(f"{root}/LibriSpeechExampleGen/examples/*")
    preset = _preset(args.model, args.train, bool(args.memorise))
    keras.utils.set_random_seed(preset.train.seed)
    front = preset.model.front_end
    if args.memorise:
        records = _records(examples, "train", args.memorise, args.utterances)
        probe = Probe(records, tft_output, front)
        epoch_steps = 100
        train_ds = (tf.data.Dataset.from_tensor_slices(
            (probe.features, probe.lengths, probe.tokens))
                    .map(data._element).repeat().shuffle(len(records))
                    .padded_batch(16, padded_shapes=(
                        {"features": list(front.padded_shape),
                         "lengths": [], "tokens": [None]}, [None])))
    else:
        train_ds = data.make_dataset(
            [os.path.join(examples, "Split-train", "*")], tft_output, preset,
            training=True)
        epoch_steps = trainer.steps_per_epoch(tft_output, preset,
                                              config.MAX_AUDIO_SECONDS)
        probe = Probe(_records(examples, "eval", 0.0, 0), tft_output, front)
    model = trainer.build_trainer(preset, epoch_steps * args.epochs)
    probe.model = model
    print(json.dumps({"preset": config.training_dict(preset),
                      "steps_per_epoch": epoch_steps}), flush=True)
    started, done = time.time(), 0
    while done < args.epochs:
        n = min(args.eval_every, args.epochs - done)
        history = model.fit(train_ds, initial_epoch=done, epochs=done + n,
                            steps_per_epoch=epoch_steps, verbose=0)
        done += n
        print(json.dumps({
            "epoch": done, "step": done * epoch_steps,
            "seconds": round(time.time() - started),
            "train": {k: round(v[-1], 4) for k, v in history.history.items()},
            **{k: (round(v, 4) if isinstance(v, float) else v)
               for k, v in probe.run().items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
