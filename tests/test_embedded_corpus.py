"""The committed embedded corpus (data/embedded-corpus): layout and contents.

Fast: reads the committed files (FLAC headers only), never regenerates them.
scripts/make_corpus.py makes the corpus; these are the properties the demo
and the pipeline rely on, and the held-out properties the corpus README
claims: dev/test text from templates and word lists train never uses,
dev/test voices no train speaker uses, and test-other spoken by a
synthesiser family (and recorded speaker) absent from train and dev.
"""

import collections
import importlib.util
import json
import os
import re
import sys

import pytest
import soundfile as sf

import librispeech_oracle
from conftest import EMBEDDED_CORPUS
from models import config

SUBSETS = ("train-clean", "dev-clean", "test-clean", "test-other")
HELD_OUT = ("dev-clean", "test-clean", "test-other")
MIN_UTTERANCES = {"train-clean": 800, "dev-clean": 50, "test-clean": 50,
                  "test-other": 40}
HOURS = {"train-clean": (1.2, 1.5), "dev-clean": (0.07, 0.13),
         "test-clean": (0.07, 0.13), "test-other": (0.05, 0.11)}
MIN_TRAIN_SPEAKERS = 100
MIN_TRAIN_FAMILIES = 3
MIN_HELD_OUT_SPEAKERS = 3
MIN_DISTINCT_WORDS = 1000
# Held-out text: at most this share of a held-out subset's word-trigram
# tokens (within each utterance, not counting trigrams made only of
# make_corpus.FUNCTION_WORDS) occurs anywhere in train.
MAX_TRIGRAM_OVERLAP = 0.05
# Held-out word tokens never seen in train: some, as in LibriSpeech, but few
# enough for a character model to do something.
OOV_RATE = (0.03, 0.20)
# Duration: every pipeline slice holds a good share of every subset.
MIN_BUCKET_SHARE = 0.08
MIN_SECONDS, MAX_SECONDS = 1.0, 20.0
MEAN_SECONDS = (4.5, 7.5)

FLAC_RE = re.compile(r"^(\d+)-(\d+)-(\d{4})\.flac$")
TRANS_RE = re.compile(r"^(\d+)-(\d+)\.trans\.txt$")
LINE_RE = re.compile(r"^(\d+)-(\d+)-(\d{4}) (.+)$")

pytestmark = pytest.mark.skipif(
    not os.path.isdir(EMBEDDED_CORPUS),
    reason=f"no embedded corpus at {EMBEDDED_CORPUS}")


def _scan():
    """subset -> {utt_id: (speaker, chapter, transcript, flac path)}.

    Asserts the layout on the way: only speaker/chapter directories with
    numeric names, only correctly named .flac and .trans.txt files whose ids
    match their directories, and a one-to-one match of flac files and
    transcript lines.
    """
    corpus = {}
    for subset in SUBSETS:
        subset_dir = os.path.join(EMBEDDED_CORPUS, subset)
        assert os.path.isdir(subset_dir), subset_dir
        utts = {}
        for speaker in sorted(os.listdir(subset_dir)):
            speaker_dir = os.path.join(subset_dir, speaker)
            assert speaker.isdigit() and os.path.isdir(speaker_dir), speaker_dir
            for chapter in sorted(os.listdir(speaker_dir)):
                chapter_dir = os.path.join(speaker_dir, chapter)
                assert chapter.isdigit() and os.path.isdir(chapter_dir), \
                    chapter_dir
                flacs, lines = set(), {}
                for name in sorted(os.listdir(chapter_dir)):
                    path = os.path.join(chapter_dir, name)
                    m = FLAC_RE.match(name)
                    if m:
                        assert m.group(1, 2) == (speaker, chapter), path
                        flacs.add(name[:-len(".flac")])
                        continue
                    m = TRANS_RE.match(name)
                    assert m and m.group(1, 2) == (speaker, chapter), \
                        f"unexpected file {path}"
                    with open(path, "rb") as f:
                        raw = f.read()
                    assert raw.endswith(b"\n"), path
                    for line in raw.decode("ascii").splitlines():
                        m = LINE_RE.match(line)
                        assert m and m.group(1, 2) == (speaker, chapter), \
                            f"{path}: bad line {line!r}"
                        utt_id = line.split(" ", 1)[0]
                        assert utt_id not in lines, f"{path}: repeated {utt_id}"
                        lines[utt_id] = m.group(4)
                assert flacs, f"{chapter_dir}: no audio"
                assert flacs == set(lines), (
                    f"{chapter_dir}: flac without transcript "
                    f"{sorted(flacs - set(lines))}, transcript without flac "
                    f"{sorted(set(lines) - flacs)}")
                for utt_id, text in lines.items():
                    utts[utt_id] = (int(speaker), int(chapter), text,
                                    os.path.join(chapter_dir,
                                                 utt_id + ".flac"))
        corpus[subset] = utts
    return corpus


@pytest.fixture(scope="module")
def corpus():
    return _scan()


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(EMBEDDED_CORPUS, "manifest.json"),
              encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def make_corpus():
    spec = importlib.util.spec_from_file_location(
        "make_corpus", os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "scripts", "make_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while defined.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def voices(manifest):
    """speaker id -> its manifest voice entry."""
    return {v["speaker_id"]: v for v in manifest["voices"]}


def _words(utts):
    return collections.Counter(w for _, _, text, _ in utts.values()
                               for w in text.split())


def _sentences(utts, manifest):
    """Each utterance's sentences (word lists), from manifest.json's
    sentence_words."""
    out = []
    for utt_id, (_, _, text, _) in utts.items():
        words = text.split()
        lengths = manifest["utterances"][utt_id]["sentence_words"]
        assert sum(lengths) == len(words), utt_id
        start = 0
        for n in lengths:
            out.append(words[start:start + n])
            start += n
    return out


def _trigrams(words):
    return list(zip(words, words[1:], words[2:]))


def test_only_the_four_subsets_and_docs_at_the_root():
    assert sorted(os.listdir(EMBEDDED_CORPUS)) == sorted(
        SUBSETS + ("README.md", "manifest.json"))
    for subset in SUBSETS:
        assert subset.split("-")[0] in config.SUBSET_PREFIX_TO_SPLIT


def test_layout_pairs_every_flac_with_a_transcript_line(corpus):
    # _scan asserts the layout; ids are also unique across the corpus.
    ids = [u for utts in corpus.values() for u in utts]
    assert len(ids) == len(set(ids))
    chapters = collections.defaultdict(set)
    for subset, utts in corpus.items():
        for speaker, chapter, _, _ in utts.values():
            chapters[chapter].add((subset, speaker))
    assert all(len(owners) == 1 for owners in chapters.values())


def test_utterance_counts_and_hours(corpus, manifest):
    for subset, minimum in MIN_UTTERANCES.items():
        s = manifest["subsets"][subset]
        assert len(corpus[subset]) >= minimum, subset
        assert s["utterances"] == len(corpus[subset])
        lo, hi = HOURS[subset]
        assert lo <= s["hours"] <= hi, (subset, s["hours"])


def test_speakers_are_distinct_voices_and_held_out(corpus, manifest, voices):
    speakers = {s: {spk for spk, _, _, _ in utts.values()}
                for s, utts in corpus.items()}
    for s in SUBSETS:
        assert {v["speaker_id"] for v in manifest["voices"]
                if v["subset"] == s} == speakers[s], s
    train = speakers["train-clean"]
    assert len(train) >= MIN_TRAIN_SPEAKERS
    assert len({voices[s]["family"] for s in train}) >= MIN_TRAIN_FAMILIES
    for held_out in HELD_OUT:
        assert len(speakers[held_out]) >= MIN_HELD_OUT_SPEAKERS, held_out
        assert not speakers[held_out] & train
    # Each speaker is one engine + voice + variant, and no dev/test one is a
    # train one.
    key = lambda v: (v["family"], v["voice"], v["variant"])  # noqa: E731
    keys = [key(v) for v in manifest["voices"]]
    assert len(set(keys)) == len(keys)
    train_keys = {key(voices[s]) for s in train}
    for held_out in HELD_OUT:
        assert not {key(voices[s]) for s in speakers[held_out]} & train_keys


def test_test_other_is_a_family_and_recorded_speakers_absent_from_training(
        corpus, manifest, voices):
    family = manifest["held_out_family"]
    by_subset = {s: [voices[spk] for spk in {x[0] for x in utts.values()}]
                 for s, utts in corpus.items()}
    assert {v["family"] for v in by_subset["test-other"]} == {family}
    seen = by_subset["train-clean"] + by_subset["dev-clean"]
    assert family not in {v["family"] for v in seen}
    assert family not in {v["family"] for v in by_subset["test-clean"]}
    recorded = {v["recorded_speaker"] for v in by_subset["test-other"]}
    assert all(recorded)
    assert not recorded & {v["recorded_speaker"] for v in seen}
    # test-clean holds out voices of families that train uses.
    train_families = {v["family"] for v in by_subset["train-clean"]}
    assert {v["family"] for v in by_subset["test-clean"]} <= train_families


def test_held_out_text_shares_few_trigrams_with_train(corpus, manifest,
                                                      make_corpus):
    function_words = make_corpus.FUNCTION_WORDS
    assert set(manifest["function_words"]) == set(function_words)
    assert {"THE", "OF", "AND", "WAS", "SHE", "DIDN'T"} <= function_words
    train = {t for _, _, text, _ in corpus["train-clean"].values()
             for t in _trigrams(text.split())}
    for held_out in HELD_OUT:
        grams = [t for _, _, text, _ in corpus[held_out].values()
                 for t in _trigrams(text.split())
                 if not all(w in function_words for w in t)]
        shared = sum(t in train for t in grams)
        rate = shared / len(grams)
        assert rate <= MAX_TRIGRAM_OVERLAP, (held_out, rate)
        s = manifest["subsets"][held_out]
        assert s["content_trigram_tokens"] == len(grams)
        assert s["content_trigram_tokens_in_train"] == shared


def test_no_held_out_sentence_is_near_a_train_sentence(corpus, manifest,
                                                       make_corpus):
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein
    edits = make_corpus.MAX_NEAR_EDITS
    assert edits >= 2
    codes = {}

    def encode(words):  # one character per word: word-level edits
        return "".join(codes.setdefault(w, chr(0x4E00 + len(codes)))
                       for w in words)
    train_sentences = [encode(s) for s in _sentences(corpus["train-clean"],
                                                     manifest)]
    train_utts = [encode(text.split())
                  for _, _, text, _ in corpus["train-clean"].values()]
    for held_out in HELD_OUT:
        for words in _sentences(corpus[held_out], manifest):
            hit = process.extractOne(encode(words), train_sentences,
                                     scorer=Levenshtein.distance,
                                     score_cutoff=edits)
            assert hit is None, (held_out, " ".join(words))
        for utt_id, (_, _, text, _) in corpus[held_out].items():
            hit = process.extractOne(encode(text.split()), train_utts,
                                     scorer=Levenshtein.distance,
                                     score_cutoff=edits)
            assert hit is None, (utt_id, text)


def test_held_out_templates_and_proper_nouns_are_not_train_ones(
        corpus, manifest, make_corpus):
    templates = {s: {t for u in utts for t in
                     manifest["utterances"][u]["templates"]}
                 for s, utts in corpus.items()}
    assert templates["train-clean"] <= set(manifest["templates"]["train"])
    for held_out in HELD_OUT:
        assert templates[held_out] <= set(manifest["templates"]["held_out"])
        assert not templates[held_out] & templates["train-clean"]
    assert not set(manifest["templates"]["train"]) & set(
        manifest["templates"]["held_out"])
    train_proper = {w.upper() for w in make_corpus.NAMES + make_corpus.PLACES}
    held_proper = {w.upper() for w in make_corpus.H_PROPER}
    assert not train_proper & held_proper
    train_words = _words(corpus["train-clean"])
    for held_out in HELD_OUT:
        words = {w[:-2] if w.endswith("'S") else w
                 for w in _words(corpus[held_out])}
        assert words & held_proper, held_out
        assert not words & train_proper, held_out
        assert not (words & held_proper) & set(train_words), held_out


def test_held_out_oov_rate_is_modest(corpus, manifest):
    train_words = _words(corpus["train-clean"])
    for held_out in HELD_OUT:
        words = _words(corpus[held_out])
        oov = sum(c for w, c in words.items() if w not in train_words)
        rate = oov / sum(words.values())
        assert OOV_RATE[0] <= rate <= OOV_RATE[1], (held_out, rate)
        assert manifest["subsets"][held_out]["oov_tokens"] == oov


def test_vocabulary_size_and_unique_transcripts(corpus):
    all_words = _words({k: v for utts in corpus.values()
                        for k, v in utts.items()})
    assert len(all_words) >= MIN_DISTINCT_WORDS
    texts = [text for utts in corpus.values()
             for _, _, text, _ in utts.values()]
    assert len(set(texts)) == len(texts)


def test_transcripts_use_only_the_vocabulary(corpus):
    allowed = set(config.CHARACTERS)
    apostrophes = 0
    for utts in corpus.values():
        for utt_id, (_, _, text, _) in utts.items():
            assert set(text) <= allowed, (utt_id, text)
            assert text == " ".join(text.split()), (utt_id, text)
            assert text == text.upper()
            apostrophes += "'" in text
    assert apostrophes > 0


def test_audio_is_16k_mono_16_bit_flac(corpus, manifest):
    for utts in corpus.values():
        for utt_id, (_, _, text, path) in utts.items():
            info = sf.info(path)
            assert (info.format, info.subtype) == ("FLAC", "PCM_16"), utt_id
            assert info.samplerate == config.SAMPLE_RATE, utt_id
            assert info.channels == 1, utt_id
            assert MIN_SECONDS <= info.duration <= MAX_SECONDS, \
                (utt_id, info.duration)
            assert abs(manifest["utterances"][utt_id]["seconds"]
                       - info.duration) < 1e-3, utt_id
            # Greedy decoding is capped at MAX_TOKENS_PER_SECOND: every
            # transcript (and its end token) must fit under the cap.
            assert len(text) + 1 <= \
                config.MAX_TOKENS_PER_SECOND * info.duration, (utt_id, text)


def test_every_duration_slice_is_populated_in_every_subset(corpus, manifest):
    for subset, utts in corpus.items():
        seconds = [manifest["utterances"][u]["seconds"] for u in utts]
        buckets = collections.Counter(config.duration_bucket(s)
                                      for s in seconds)
        for bucket in config.DURATION_BUCKETS:
            assert buckets[bucket] >= MIN_BUCKET_SHARE * len(seconds), \
                (subset, bucket, buckets)
        assert manifest["subsets"][subset][
            "utterances_per_duration_bucket"] == {
                b: buckets[b] for b in config.DURATION_BUCKETS}
        mean = sum(seconds) / len(seconds)
        assert MEAN_SECONDS[0] <= mean <= MEAN_SECONDS[1], (subset, mean)


def test_size_budget(make_corpus):
    """Within the generator's budget (the repository carries every byte)."""
    total = sum(os.path.getsize(os.path.join(d, f))
                for d, _, files in os.walk(EMBEDDED_CORPUS) for f in files)
    assert make_corpus.MAX_CORPUS_BYTES <= 80_000_000
    assert total <= make_corpus.MAX_CORPUS_BYTES, total


def test_manifest_totals_and_readme(corpus, manifest):
    totals = manifest["totals"]
    assert totals["utterances"] == sum(len(u) for u in corpus.values())
    assert set(manifest["utterances"]) == {
        u for utts in corpus.values() for u in utts}
    all_words = _words({k: v for utts in corpus.values()
                        for k, v in utts.items()})
    assert totals["distinct_words"] == len(all_words)
    with open(os.path.join(EMBEDDED_CORPUS, "README.md"),
              encoding="utf-8") as f:
        readme = f.read()
    for family in {v["family"] for v in manifest["voices"]}:
        assert family.lower() in readme.lower(), family
    assert "## Licences" in readme and "CC0" in readme
    for subset in SUBSETS:
        assert subset in readme


def test_the_example_gen_scanner_accepts_every_utterance(corpus):
    from components.librispeech_example_gen import layout
    for subset, utts in corpus.items():
        found, quarantined = librispeech_oracle.scan_subsets(
            [os.path.join(EMBEDDED_CORPUS, subset)])
        assert not quarantined, [q.to_dict() for q in quarantined[:3]]
        assert {u.utterance_id: u.transcript for u in found} == {
            k: v[2] for k, v in utts.items()}
