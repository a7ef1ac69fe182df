"""The committed embedded corpus (data/embedded-corpus): layout and contents.

Fast: reads the committed files (FLAC headers only), never regenerates them.
scripts/make_corpus.py makes the corpus; these are the properties the demo
and the pipeline rely on.
"""

import collections
import importlib.util
import json
import os
import re
import sys

import pytest
import soundfile as sf

from conftest import EMBEDDED_CORPUS
from models import config

SUBSETS = ("train-clean", "dev-clean", "test-clean")
MIN_UTTERANCES = {"train-clean": 2000, "dev-clean": 100, "test-clean": 100}
MIN_SPEAKERS = 90
MIN_DISTINCT_WORDS = 1000
# Held-out words: a few unseen-in-train words are fine, as in LibriSpeech.
MAX_UNSEEN_TOKEN_RATE = 0.05

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


def _words(utts):
    return collections.Counter(w for _, _, text, _ in utts.values()
                               for w in text.split())


def test_only_the_three_subsets_and_docs_at_the_root():
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


def test_utterance_counts(corpus, manifest):
    for subset, minimum in MIN_UTTERANCES.items():
        assert len(corpus[subset]) >= minimum, subset
        assert manifest["subsets"][subset]["utterances"] == len(corpus[subset])


def test_speakers_are_distinct_voices_and_held_out(corpus, manifest):
    speakers = {s: {spk for spk, _, _, _ in utts.values()}
                for s, utts in corpus.items()}
    assert len(set().union(*speakers.values())) >= MIN_SPEAKERS
    train = speakers["train-clean"]
    for held_out in ("dev-clean", "test-clean"):
        assert speakers[held_out] and not speakers[held_out] & train
    # Each speaker id is one espeak-ng voice (variant, speed, pitch), and no
    # dev/test voice variant is a train one.
    voices = {s: {sp["speaker_id"]: sp["espeak"]
                  for sp in manifest["subsets"][s]["speakers"]}
              for s in SUBSETS}
    for s in SUBSETS:
        assert set(voices[s]) == speakers[s], s
    specs = [spec for v in voices.values() for spec in v.values()]
    assert len(set(specs)) == len(specs) >= MIN_SPEAKERS
    variant = lambda spec: spec.split()[0].split("+")[1]  # noqa: E731
    train_variants = {variant(x) for x in voices["train-clean"].values()}
    for held_out in ("dev-clean", "test-clean"):
        assert not {variant(x) for x in voices[held_out].values()} \
            & train_variants


def test_vocabulary_size_and_held_out_sentences(corpus):
    all_words = _words({k: v for utts in corpus.values()
                        for k, v in utts.items()})
    assert len(all_words) >= MIN_DISTINCT_WORDS
    train_texts = {text for _, _, text, _ in corpus["train-clean"].values()}
    train_words = _words(corpus["train-clean"])
    for held_out in ("dev-clean", "test-clean"):
        texts = [text for _, _, text, _ in corpus[held_out].values()]
        assert not set(texts) & train_texts, held_out
        words = _words(corpus[held_out])
        unseen = sum(c for w, c in words.items() if w not in train_words)
        assert unseen / sum(words.values()) <= MAX_UNSEEN_TOKEN_RATE


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


def test_audio_is_16k_mono_16_bit_flac(corpus):
    for utts in corpus.values():
        for utt_id, (_, _, _, path) in utts.items():
            info = sf.info(path)
            assert (info.format, info.subtype) == ("FLAC", "PCM_16"), utt_id
            assert info.samplerate == config.SAMPLE_RATE, utt_id
            assert info.channels == 1, utt_id
            assert 1.0 <= info.duration <= 6.0, (utt_id, info.duration)


def test_size_budget():
    """Within the generator's budget (the repository carries every byte)."""
    spec = importlib.util.spec_from_file_location(
        "make_corpus", os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "scripts", "make_corpus.py"))
    make_corpus = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while defined.
    sys.modules[spec.name] = make_corpus
    spec.loader.exec_module(make_corpus)
    total = sum(os.path.getsize(os.path.join(d, f))
                for d, _, files in os.walk(EMBEDDED_CORPUS) for f in files)
    assert total <= make_corpus.MAX_CORPUS_BYTES, total


def test_manifest_totals_match(corpus, manifest):
    totals = manifest["totals"]
    assert totals["utterances"] == sum(len(u) for u in corpus.values())
    all_words = _words({k: v for utts in corpus.values()
                        for k, v in utts.items()})
    assert totals["distinct_words"] == len(all_words)
    assert os.path.isfile(os.path.join(EMBEDDED_CORPUS, "README.md"))


def test_the_example_gen_scanner_accepts_every_utterance(corpus):
    from components.librispeech_example_gen import layout
    for subset, utts in corpus.items():
        found, quarantined = layout.scan_subsets(
            [os.path.join(EMBEDDED_CORPUS, subset)])
        assert not quarantined, [q.to_dict() for q in quarantined[:3]]
        assert {u.utterance_id: u.transcript for u in found} == {
            k: v[2] for k, v in utts.items()}
