#!/usr/bin/env python3
"""Generates the embedded default corpus that `make demo` trains on.

LibriSpeech cannot be downloaded everywhere the demo runs, so the repository
ships a small synthetic corpus in the exact LibriSpeech layout::

    <out>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac
    <out>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

with subsets ``train-clean``, ``dev-clean`` and ``test-clean`` (the pipeline
maps the prefixes train/dev/test to its train/eval/test splits, as
config.SUBSET_PREFIX_TO_SPLIT says).

Text: sentences drawn with a fixed seed from an embedded grammar (about thirty
templates over embedded word lists: names, places, nouns with plurals, verbs
with their inflections, adjectives, adverbs, spelled-out numbers and common
contractions such as DON'T, IT'S, JOHN'S). Words are drawn Zipf-like from each
list, so common words repeat often and rare ones give a long tail. Every
transcript is unique across the corpus, so dev and test sentences are held
out from train; dev/test sentences are drawn mostly from words that train
contains (at most one unseen word per sentence, in a minority of sentences).

Audio: espeak-ng (formant synthesis) speaks each sentence with the voice of
its speaker: an espeak-ng voice and variant (e.g. ``en-us+m1``,
``en-gb-scotland+f4``) with its own speed (-s) and pitch (-p). Dev and test
speakers use voices, variants, speeds and pitches that no train speaker uses,
as LibriSpeech splits by speaker. espeak-ng's 22,050 Hz output is resampled to
config.SAMPLE_RATE mono with soxr (HQ), its silences trimmed to 0.10-0.20 s at
each end (padded to at least 1.5 s in all), scaled to the speaker's level with a small deterministic
per-utterance gain variation, and written as 16-bit FLAC with soundfile.

Regenerating needs espeak-ng: ``apt-get install espeak-ng`` (tested with
espeak-ng 1.51), plus the project's venv (soundfile, soxr, numpy). Run::

    python scripts/make_corpus.py --out data/embedded-corpus

(or ``make corpus``). The output is deterministic: the transcripts depend only
on the seed and this file; the audio is bit-identical for the same espeak-ng,
soxr and libsndfile versions. The corpus is written to ``<out>.tmp`` and
swapped into place at the end, with ``README.md`` and ``manifest.json``
(voices per split, counts, hours, word statistics).
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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from models import config  # noqa: E402  pylint: disable=wrong-import-position

SEED = 20241025
ESPEAK = "espeak-ng"
ESPEAK_RATE = 22_050  # espeak-ng's output sample rate
MAX_CORPUS_BYTES = 80_000_000  # the repository's budget for the corpus

# Sentence limits (words and characters of the transcript). Characters bound
# the audio length better than words: espeak speaks ~14-17 characters/s at
# the speeds below, so 20-50 characters give ~1.5-3.5 s with the padding.
MIN_WORDS, MAX_WORDS = 4, 10
MIN_CHARS, MAX_CHARS = 20, 50
# Silence kept (or padded) at each end after trimming, in seconds; short
# utterances get more, up to MIN_SECONDS in all (silence costs FLAC little).
EDGE_SILENCE = (0.10, 0.20)
MIN_SECONDS = 1.5
# Trimming threshold relative to the utterance's peak.
TRIM_THRESHOLD = 0.02
# Per-utterance gain variation around the speaker's level, in dB.
GAIN_JITTER_DB = 2.0


# --- Speakers -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: str  # espeak-ng voice+variant
    speed: int  # words per minute (-s)
    pitch: int  # 0-99 (-p)
    level_db: float  # peak level in dBFS
    sex: str  # the variant's, for the README (F/M)

    @property
    def spec(self) -> str:
        return f"{self.voice} -s {self.speed} -p {self.pitch}"


# (subset, chapters per speaker, utterances per chapter, speakers). Speaker
# ids and chapter ids are numbered through the corpus, as in LibriSpeech
# every speaker and chapter id is unique. No variant is shared between splits.
SUBSETS: Tuple[Tuple[str, int, int, Tuple[Speaker, ...]], ...] = (
    # Ninety-two train voices, few utterances each: voice diversity is what
    # lets a model trained here generalise to the held-out voices (40 voices
    # left the held-out token accuracy ~0.07 below the training voices'; 92
    # close the gap; README, "Training quality").
    ("train-clean", 2, 13, (
        Speaker(1001, "en-us+m1", 180, 45, -18.0, "M"),
        Speaker(1002, "en-us+f2", 176, 62, -20.0, "F"),
        Speaker(1003, "en+m3", 170, 38, -17.0, "M"),
        Speaker(1004, "en+f3", 186, 68, -21.0, "F"),
        Speaker(1005, "en-gb-x-rp+m7", 174, 50, -19.0, "M"),
        Speaker(1006, "en-us+klatt2", 190, 44, -16.5, "M"),
        Speaker(1007, "en-029+f4", 178, 58, -21.5, "F"),
        Speaker(1008, "en-gb-scotland+m2", 168, 42, -18.5, "M"),
        Speaker(1009, "en-us-nyc+f1", 183, 55, -20.0, "F"),
        Speaker(1010, "en-gb-x-gbclan+m4", 194, 35, -17.5, "M"),
        Speaker(1015, "en-us+adam", 178, 47, -18.0, "M"),
        Speaker(1016, "en+Alex", 172, 50, -19.5, "M"),
        Speaker(1017, "en-us+Alicia", 182, 60, -20.5, "F"),
        Speaker(1018, "en-gb-x-rp+Andrea", 176, 63, -19.0, "F"),
        Speaker(1019, "en-us+Andy", 188, 43, -17.0, "M"),
        Speaker(1020, "en+Annie", 180, 66, -21.0, "F"),
        Speaker(1021, "en-us+antonio", 170, 40, -18.5, "M"),
        Speaker(1022, "en+aunty", 174, 58, -20.0, "F"),
        Speaker(1023, "en-us+belinda", 186, 61, -19.5, "F"),
        Speaker(1024, "en+benjamin", 176, 44, -17.5, "M"),
        Speaker(1025, "en-us+caleb", 192, 48, -18.0, "M"),
        Speaker(1026, "en-gb-scotland+david", 168, 39, -19.0, "M"),
        Speaker(1027, "en-us+Denis", 178, 46, -18.5, "M"),
        Speaker(1028, "en+ed", 184, 42, -17.0, "M"),
        Speaker(1029, "en-us+edward", 172, 51, -20.0, "M"),
        Speaker(1030, "en-029+Gene", 180, 45, -18.0, "M"),
        Speaker(1031, "en-us+Henrique", 174, 49, -19.0, "M"),
        Speaker(1032, "en+Hugo", 190, 41, -17.5, "M"),
        Speaker(1033, "en-us+iven", 182, 53, -18.5, "M"),
        Speaker(1034, "en-gb-x-gbclan+Jacky", 176, 47, -19.5, "M"),
        Speaker(1035, "en-us+john", 170, 44, -18.0, "M"),
        Speaker(1036, "en+Lee", 186, 50, -20.0, "M"),
        Speaker(1037, "en-us+max", 178, 43, -17.0, "M"),
        Speaker(1038, "en-gb-x-rp+Michael", 172, 48, -18.5, "M"),
        Speaker(1039, "en-us+Mike", 188, 46, -19.0, "M"),
        Speaker(1040, "en-us-nyc+paul", 180, 42, -18.0, "M"),
        Speaker(1041, "en-us+steph", 184, 64, -20.5, "F"),
        Speaker(1042, "en+grandma", 170, 60, -19.5, "F"),
        Speaker(1043, "en-us+shelby", 178, 62, -20.0, "F"),
        Speaker(1044, "en-gb-x-rp+anika", 182, 65, -21.0, "F"),
        Speaker(1045, "en-us+klatt3", 182, 36, -21.0, "M"),
        Speaker(1046, "en-gb-x-rp+m3", 166, 40, -20.0, "M"),
        Speaker(1047, "en-gb-x-rp+sandro", 186, 51, -19.5, "M"),
        Speaker(1048, "en-gb-scotland+edward2", 190, 44, -20.0, "M"),
        Speaker(1049, "en-gb-x-gbclan+steph2", 184, 70, -20.0, "F"),
        Speaker(1050, "en-029+grandpa", 176, 43, -18.0, "M"),
        Speaker(1051, "en-us-nyc+Diogo", 190, 39, -18.0, "M"),
        Speaker(1052, "en-us+klatt5", 168, 52, -18.5, "M"),
        Speaker(1053, "en+iven3", 182, 49, -19.0, "M"),
        Speaker(1054, "en-gb-x-rp+belinda", 188, 63, -18.5, "F"),
        Speaker(1055, "en-gb-scotland+klatt", 184, 36, -17.0, "M"),
        Speaker(1056, "en-gb-x-gbclan+Storm", 182, 47, -17.5, "M"),
        Speaker(1057, "en-029+m2", 190, 44, -17.5, "M"),
        Speaker(1058, "en-us-nyc+f3", 194, 63, -19.5, "F"),
        Speaker(1059, "en-us+victor", 166, 36, -20.5, "M"),
        Speaker(1060, "en+f4", 184, 68, -19.0, "F"),
        Speaker(1061, "en-gb-x-rp+miguel", 176, 45, -21.0, "M"),
        Speaker(1062, "en-gb-scotland+rob", 180, 52, -20.0, "M"),
        Speaker(1063, "en-gb-x-gbclan+marcelo", 168, 36, -18.5, "M"),
        Speaker(1064, "en-029+gustave", 180, 36, -16.5, "M"),
        Speaker(1065, "en-us-nyc+m5", 188, 43, -21.5, "M"),
        Speaker(1066, "en+f2", 184, 66, -20.0, "F"),
        Speaker(1067, "en+robert", 174, 46, -21.5, "M"),
        Speaker(1068, "en-gb-x-rp+quincy", 176, 34, -20.0, "M"),
        Speaker(1069, "en-gb-scotland+aunty", 176, 58, -21.0, "F"),
        Speaker(1070, "en-gb-x-gbclan+shelby", 168, 63, -16.5, "F"),
        Speaker(1071, "en-029+RicishayMax3", 172, 43, -17.5, "M"),
        Speaker(1072, "en-us-nyc+Annie", 188, 59, -19.5, "F"),
        Speaker(1073, "en-us+klatt4", 178, 49, -17.0, "M"),
        Speaker(1074, "en+announcer", 170, 48, -19.5, "M"),
        Speaker(1075, "en-gb-x-rp+Gene2", 182, 42, -17.5, "M"),
        Speaker(1076, "en-gb-scotland+AnxiousAndy", 192, 47, -20.5, "M"),
        Speaker(1077, "en-gb-x-gbclan+f1", 174, 67, -19.5, "F"),
        Speaker(1078, "en-029+iven4", 176, 46, -18.0, "M"),
        Speaker(1079, "en-us-nyc+Alicia", 170, 57, -17.5, "F"),
        Speaker(1080, "en-us+pablo", 170, 41, -21.5, "M"),
        Speaker(1081, "en+pedro", 172, 34, -20.0, "M"),
        Speaker(1082, "en-gb-x-rp+RicishayMax", 192, 52, -17.5, "M"),
        Speaker(1083, "en-gb-scotland+Marco", 174, 43, -16.5, "M"),
        Speaker(1084, "en-gb-x-gbclan+iven2", 170, 47, -20.5, "M"),
        Speaker(1085, "en-029+travis", 176, 52, -19.0, "M"),
        Speaker(1086, "en-us-nyc+Andrea", 170, 67, -20.5, "F"),
        Speaker(1087, "en+m1", 184, 35, -20.0, "M"),
        Speaker(1088, "en+michel", 194, 51, -19.5, "M"),
        Speaker(1089, "en-gb-x-rp+RicishayMax2", 178, 46, -19.5, "M"),
        Speaker(1090, "en-gb-scotland+zac", 168, 49, -21.5, "M"),
        Speaker(1091, "en-gb-x-gbclan+Nguyen", 178, 35, -18.0, "M"),
        Speaker(1092, "en-029+Mario", 168, 40, -20.0, "M"),
        Speaker(1093, "en-us-nyc+steph3", 170, 57, -19.0, "F"),
        Speaker(1094, "en-us+norbert", 184, 35, -17.0, "M"),
        Speaker(1095, "en+boris", 166, 52, -17.5, "M"),
        Speaker(1096, "en-gb-x-rp+klatt6", 182, 37, -19.0, "M"),
    )),
    ("dev-clean", 3, 18, (
        Speaker(1011, "en-us+m6", 172, 52, -18.5, "M"),
        Speaker(1012, "en-gb-x-gbcwmd+f5", 182, 64, -20.0, "F"),
    )),
    ("test-clean", 3, 18, (
        Speaker(1013, "en+m8", 176, 40, -19.0, "M"),
        Speaker(1014, "en-us+linda", 184, 55, -20.0, "F"),
    )),
)
FIRST_CHAPTER_ID = 10001


# --- Word lists ---------------------------------------------------------------
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
PERIODS = PARTS_OF_DAY + ["week", "month", "year", "summer", "winter"]
HABIT_TIMES = PARTS_OF_DAY + DAYS

PREPOSITIONS = """
in on under behind near beside above below inside outside across along past
over through around into onto from by with without against between
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
    """Draws sentences (lists of lower-case words) with a seeded RNG."""

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
                       "shouldn't", "wouldn't")
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

    TEMPLATES: Tuple[str, ...] = (
        "t_name_found", "t_subject_intrans", "t_negative", "t_possessive_was",
        "t_its_weather", "t_numbers", "t_progressive", "t_trip", "t_question",
        "t_imperative", "t_of", "t_future", "t_oclock", "t_has", "t_habit",
        "t_there_were", "t_said", "t_not_enough", "t_how_many",
        "t_two_objects", "t_seasons", "t_after", "t_thats", "t_perfect",
        "t_adverb_obj", "t_because")

    def sentence(self) -> Tuple[List[str], bool]:
        """A sentence within the word and character limits."""
        while True:
            words, question = getattr(self, self.rng.choice(self.TEMPLATES))()
            words = " ".join(words).split()  # multi-word picks
            text = " ".join(words)
            if (MIN_WORDS <= len(words) <= MAX_WORDS
                    and MIN_CHARS <= len(text) <= MAX_CHARS):
                return words, question


def transcript(words: Sequence[str]) -> str:
    return " ".join(words).upper()


def spoken_text(words: Sequence[str], question: bool) -> str:
    """What espeak-ng reads: sentence case, capitalised names, punctuation."""
    out = []
    for w in words:
        base = w[:-2] if w.endswith("'s") else w
        if base in PROPER:
            w = w[0].upper() + w[1:]
        elif w == "i" or w.startswith("i'"):
            w = "I" + w[1:]
        out.append(w)
    out[0] = out[0][0].upper() + out[0][1:]
    return " ".join(out) + ("?" if question else ".")


# --- Text for every utterance -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Utterance:
    subset: str
    speaker: Speaker
    chapter_id: int
    index: int
    text: str  # transcript, upper case
    spoken: str  # what espeak-ng reads

    @property
    def utterance_id(self) -> str:
        return f"{self.speaker.speaker_id}-{self.chapter_id}-{self.index:04d}"

    @property
    def rel_dir(self) -> str:
        return os.path.join(self.subset, str(self.speaker.speaker_id),
                            str(self.chapter_id))


def plan_corpus(seed: int = SEED) -> List[Utterance]:
    """Every utterance with its text; depends only on `seed` and this file."""
    rng = random.Random(seed)
    grammar = Grammar(rng)
    seen_texts = set()
    train_words = set()
    utterances: List[Utterance] = []
    chapter_id = FIRST_CHAPTER_ID
    for subset, chapters, per_chapter, speakers in SUBSETS:
        held_out = not subset.startswith("train")
        for speaker in speakers:
            for _ in range(chapters):
                for index in range(per_chapter):
                    while True:
                        words, question = grammar.sentence()
                        text = transcript(words)
                        if text in seen_texts:
                            continue
                        if held_out:
                            unseen = sum(w not in train_words
                                         for w in text.split())
                            # At most one unseen word, in a minority of
                            # sentences: a few out-of-vocabulary words, as
                            # LibriSpeech's dev/test have.
                            if unseen > 1 or (unseen and not grammar.chance(0.2)):
                                continue
                        break
                    seen_texts.add(text)
                    if not held_out:
                        train_words.update(text.split())
                    utterances.append(Utterance(
                        subset, speaker, chapter_id, index, text,
                        spoken_text(words, question)))
                chapter_id += 1
    _check_characters(utterances)
    return utterances


def _check_characters(utterances: Sequence[Utterance]) -> None:
    allowed = set(config.CHARACTERS)
    for u in utterances:
        bad = set(u.text) - allowed
        if bad or u.text != " ".join(u.text.split()):
            raise ValueError(f"{u.utterance_id}: transcript {u.text!r} has "
                             f"characters outside config.CHARACTERS: {bad}")


# --- Audio ------------------------------------------------------------------------

def _utterance_rng(u: Utterance):
    import numpy as np  # pylint: disable=import-outside-toplevel
    digest = hashlib.sha256(f"{SEED}:{u.utterance_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def synthesize(u: Utterance, out_root: str, tmp_dir: str) -> Tuple[str, int, float]:
    """Speaks `u` with espeak-ng and writes its FLAC; returns (id, bytes, seconds)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import soundfile as sf  # pylint: disable=import-outside-toplevel
    import soxr  # pylint: disable=import-outside-toplevel

    wav = os.path.join(tmp_dir, f"{u.utterance_id}.wav")
    cmd = [ESPEAK, "-v", u.speaker.voice, "-s", str(u.speaker.speed),
           "-p", str(u.speaker.pitch), "-w", wav, u.spoken]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not os.path.exists(wav):
        raise RuntimeError(f"{u.utterance_id}: {' '.join(cmd)} failed "
                           f"({proc.returncode}): {proc.stderr.strip()}")
    samples, rate = sf.read(wav, dtype="float32", always_2d=True)
    os.remove(wav)
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"{u.utterance_id}: espeak-ng wrote {rate} Hz, "
                           f"expected {ESPEAK_RATE} Hz")
    y = soxr.resample(samples.mean(axis=1), rate, config.SAMPLE_RATE,
                      quality="HQ").astype(np.float64)
    peak = float(np.abs(y).max())
    if not peak > 0:
        raise RuntimeError(f"{u.utterance_id}: espeak-ng wrote silence")
    voiced = np.flatnonzero(np.abs(y) > TRIM_THRESHOLD * peak)
    y = y[voiced[0]:voiced[-1] + 1]
    rng = _utterance_rng(u)
    lead, tail = (int(round(s * config.SAMPLE_RATE))
                  for s in rng.uniform(*EDGE_SILENCE, size=2))
    short = int(MIN_SECONDS * config.SAMPLE_RATE) - (lead + len(y) + tail)
    if short > 0:
        lead += short // 2
        tail += short - short // 2
    y = np.concatenate([np.zeros(lead), y, np.zeros(tail)])
    gain_db = u.speaker.level_db + rng.uniform(-GAIN_JITTER_DB, GAIN_JITTER_DB)
    y *= 10.0 ** (gain_db / 20.0) / peak
    pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype(np.int16)
    path = os.path.join(out_root, u.rel_dir, f"{u.utterance_id}.flac")
    sf.write(path, pcm, config.SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return u.utterance_id, os.path.getsize(path), len(pcm) / config.SAMPLE_RATE


_WORKER: Dict[str, str] = {}


def _init_worker(out_root: str) -> None:
    _WORKER["out"] = out_root
    _WORKER["tmp"] = tempfile.mkdtemp(prefix="make_corpus_")


def _work(u: Utterance):
    return synthesize(u, _WORKER["out"], _WORKER["tmp"])


# --- Statistics, README, manifest ------------------------------------------------------

def split_of(subset: str) -> str:
    for prefix, split in config.SUBSET_PREFIX_TO_SPLIT.items():
        if subset.startswith(prefix):
            return split
    raise ValueError(subset)


def statistics(utterances: Sequence[Utterance], seconds: Dict[str, float],
               flac_bytes: Dict[str, int], espeak_version: str) -> dict:
    by_subset: Dict[str, List[Utterance]] = collections.OrderedDict()
    for u in utterances:
        by_subset.setdefault(u.subset, []).append(u)
    train_counts = collections.Counter(
        w for u in utterances if u.subset.startswith("train")
        for w in u.text.split())
    all_words = collections.Counter(w for u in utterances
                                    for w in u.text.split())
    subsets = {}
    for subset, us in by_subset.items():
        words = collections.Counter(w for u in us for w in u.text.split())
        durations = [seconds[u.utterance_id] for u in us]
        total = sum(durations)
        entry = {
            "split": split_of(subset),
            "utterances": len(us),
            "speakers": [{"speaker_id": s.speaker_id, "espeak": s.spec,
                          "sex": s.sex, "level_dbfs": s.level_db}
                         for s in dict.fromkeys(u.speaker for u in us)],
            "chapters": len({u.chapter_id for u in us}),
            "seconds": round(total, 2),
            "hours": round(total / 3600.0, 4),
            "min_seconds": round(min(durations), 3),
            "max_seconds": round(max(durations), 3),
            "mean_seconds": round(total / len(us), 3),
            "word_tokens": sum(words.values()),
            "distinct_words": len(words),
            "flac_bytes": sum(flac_bytes[u.utterance_id] for u in us),
        }
        if not subset.startswith("train"):
            oov = {w: c for w, c in words.items() if w not in train_counts}
            entry["words_unseen_in_train"] = sorted(oov)
            entry["unseen_token_rate"] = round(
                sum(oov.values()) / sum(words.values()), 4)
        subsets[subset] = entry
    tokens = sum(all_words.values())
    return {
        "description": "Synthetic LibriSpeech-layout corpus spoken by "
                       "espeak-ng; see README.md.",
        "generator": "scripts/make_corpus.py",
        "command": "python scripts/make_corpus.py --out data/embedded-corpus",
        "seed": SEED,
        "espeak_ng": espeak_version,
        "sample_rate": config.SAMPLE_RATE,
        "format": "FLAC, 16-bit PCM, mono",
        "subsets": subsets,
        "totals": {
            "utterances": len(utterances),
            "speakers": len({u.speaker.speaker_id for u in utterances}),
            "seconds": round(sum(seconds.values()), 2),
            "hours": round(sum(seconds.values()) / 3600.0, 4),
            "word_tokens": tokens,
            "distinct_words": len(all_words),
            "distinct_words_train": len(train_counts),
            "train_words_seen_3_or_more_times": sum(
                1 for c in train_counts.values() if c >= 3),
            "words_with_apostrophe": sorted(w for w in all_words if "'" in w),
            "flac_bytes": sum(flac_bytes.values()),
        },
        "top_words": [[w, c] for w, c in all_words.most_common(25)],
    }


README_TEMPLATE = """# Embedded corpus (synthetic, LibriSpeech layout)

The default corpus that `make demo` trains on when no LibriSpeech is at hand.
It is **synthetic**: espeak-ng (formant synthesis) reading sentences drawn
from a small English grammar. It proves the pipeline end to end and lets a
small model learn something; it is not a substitute for real speech.

Generated by `make corpus`, that is

    {command}

(needs `apt-get install espeak-ng`), seed {seed}, espeak-ng {espeak}.
Deterministic: rerunning gives the same transcripts, and the same audio with
the same espeak-ng, soxr and libsndfile. `manifest.json` holds the
statistics below in machine-readable form.

## Layout

Exactly LibriSpeech's:

    <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   ("<utt_id> TRANSCRIPT")

Subsets `train-clean`, `dev-clean`, `test-clean` (the pipeline's train, eval
and test splits). Audio: {rate} Hz mono 16-bit FLAC. Transcripts: upper case,
A-Z, space and apostrophe only (models/config.py CHARACTERS).

## Splits

| subset | split | speakers | chapters | utterances | hours | mean s | min-max s | words | distinct words |
|---|---|---|---|---|---|---|---|---|---|
{split_rows}
| total | | {t_speakers} | | {t_utts} | {t_hours:.3f} | | | {t_tokens} | {t_distinct} |

## Voices

Each speaker is one espeak-ng voice+variant (`en` is British English) at its
own speed (-s, words per minute), pitch (-p) and level (peak dBFS, with a +-{jitter} dB per-utterance
variation). Dev and test speakers use variants, accents, speeds and pitches
that no train speaker uses, as LibriSpeech keeps speakers apart across splits.

| subset | speaker | espeak-ng | sex | level dBFS |
|---|---|---|---|---|
{voice_rows}

## Text

Sentences come from ~26 templates (statements, questions, negatives,
imperatives, times, numbers, possessives) over embedded word lists of names,
places, nouns (with plurals), verbs (with -s, -ed and -ing forms),
adjectives, adverbs and spelled-out numbers, drawn Zipf-like so that common
words repeat and rare words form a long tail. Contractions and possessives
give apostrophes ({apostrophes} distinct words with one, e.g.
{apos_examples}).

- {t_distinct} distinct words overall, {t_train_distinct} in train;
  {t_train_3} train words occur 3 or more times.
- Every transcript is unique: no dev or test sentence occurs in train.
- Dev and test sentences contain at most one word unseen in train; unseen
  token rate: {oov}.

## Processing

espeak-ng writes 22,050 Hz WAV; it is resampled to {rate} Hz with soxr (HQ),
trimmed to its speech (samples above {trim:g} of the peak) with 0.10-0.20 s
of silence at each end (more for utterances shorter than {min_s:g} s),
scaled to the speaker's level with the per-utterance variation, and written
as 16-bit FLAC with soundfile.
Audio files total {mb:.1f} MB.
"""


def render_readme(stats: dict) -> str:
    t = stats["totals"]
    split_rows, voice_rows, oov = [], [], []
    for subset, s in stats["subsets"].items():
        split_rows.append(
            f"| {subset} | {s['split']} | {len(s['speakers'])} | "
            f"{s['chapters']} | {s['utterances']} | {s['hours']:.3f} | "
            f"{s['mean_seconds']:.2f} | {s['min_seconds']:.2f}-"
            f"{s['max_seconds']:.2f} | {s['word_tokens']} | "
            f"{s['distinct_words']} |")
        for sp in s["speakers"]:
            voice_rows.append(f"| {subset} | {sp['speaker_id']} | "
                              f"`{sp['espeak']}` | {sp['sex']} | "
                              f"{sp['level_dbfs']:g} |")
        if "unseen_token_rate" in s:
            oov.append(f"{subset} {100 * s['unseen_token_rate']:.1f}% "
                       f"({len(s['words_unseen_in_train'])} words)")
    apos = t["words_with_apostrophe"]
    return README_TEMPLATE.format(
        command=stats["command"], seed=stats["seed"],
        espeak=stats["espeak_ng"], rate=stats["sample_rate"],
        split_rows="\n".join(split_rows), voice_rows="\n".join(voice_rows),
        t_speakers=t["speakers"], t_utts=t["utterances"],
        t_hours=t["hours"], t_tokens=t["word_tokens"],
        t_distinct=t["distinct_words"],
        t_train_distinct=t["distinct_words_train"],
        t_train_3=t["train_words_seen_3_or_more_times"],
        apostrophes=len(apos), apos_examples=", ".join(
            [w for w in ("DON'T", "IT'S", "JOHN'S", "O'CLOCK", "WASN'T",
                         "I'LL") if w in apos] or apos[:6]),
        oov="; ".join(oov), jitter=GAIN_JITTER_DB, trim=TRIM_THRESHOLD,
        min_s=MIN_SECONDS,
        mb=t["flac_bytes"] / 1e6)


def espeak_version() -> str:
    try:
        out = subprocess.run([ESPEAK, "--version"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            f"make_corpus: cannot run {ESPEAK} ({e}); install it with "
            "`apt-get install espeak-ng`") from e
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()


def _espeak_probe(voice: str, speed: int, pitch: int) -> bytes:
    return subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout",
         "The quick brown fox jumps over the lazy dog."],
        capture_output=True, check=True).stdout


def check_voices(speakers: Sequence[Speaker]) -> None:
    """Fails unless every speaker's voice and variant exist and differ.

    espeak-ng silently falls back to its default voice for an unknown voice
    or variant, which would merge speakers; a probe sentence catches it.
    """
    seen: Dict[bytes, int] = {}
    for sp in speakers:
        base, _, variant = sp.voice.partition("+")
        full = _espeak_probe(sp.voice, sp.speed, sp.pitch)
        if variant and full == _espeak_probe(base, sp.speed, sp.pitch):
            raise SystemExit(f"make_corpus: speaker {sp.speaker_id}: espeak-ng "
                             f"has no variant {variant!r} ({sp.voice})")
        if base not in ("en", "en-gb") and _espeak_probe(
                base, sp.speed, sp.pitch) == _espeak_probe(
                    "en", sp.speed, sp.pitch):
            raise SystemExit(f"make_corpus: speaker {sp.speaker_id}: espeak-ng "
                             f"has no voice {base!r}")
        if full in seen:
            raise SystemExit(f"make_corpus: speakers {seen[full]} and "
                             f"{sp.speaker_id} sound identical")
        seen[full] = sp.speaker_id


def dir_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(root) for f in files)


# --- Main ------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(
        REPO_ROOT, "data", "embedded-corpus"), help="output corpus root")
    parser.add_argument("--jobs", type=int, default=2,
                        help="parallel espeak-ng processes (default 2)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help=f"text seed (default {SEED}; the shipped corpus "
                             "uses the default)")
    args = parser.parse_args(argv)
    started = time.time()
    version = espeak_version()
    out = os.path.abspath(args.out)
    tmp_out = out.rstrip(os.sep) + ".tmp"

    check_voices([sp for _, _, _, speakers in SUBSETS for sp in speakers])
    utterances = plan_corpus(args.seed)
    if os.path.exists(tmp_out):
        shutil.rmtree(tmp_out)
    by_dir: Dict[str, List[Utterance]] = collections.OrderedDict()
    for u in utterances:
        by_dir.setdefault(u.rel_dir, []).append(u)
    for rel_dir, us in by_dir.items():
        os.makedirs(os.path.join(tmp_out, rel_dir))
        speaker, chapter = us[0].speaker.speaker_id, us[0].chapter_id
        with open(os.path.join(tmp_out, rel_dir,
                               f"{speaker}-{chapter}.trans.txt"),
                  "w", encoding="ascii", newline="\n") as f:
            for u in us:
                f.write(f"{u.utterance_id} {u.text}\n")

    print(f"make_corpus: synthesising {len(utterances)} utterances with "
          f"espeak-ng {version} on {args.jobs} process(es)", flush=True)
    seconds: Dict[str, float] = {}
    flac_bytes: Dict[str, int] = {}
    with multiprocessing.get_context("fork").Pool(
            args.jobs, initializer=_init_worker, initargs=(tmp_out,)) as pool:
        for i, (uid, size, secs) in enumerate(
                pool.imap(_work, utterances, chunksize=8), 1):
            seconds[uid], flac_bytes[uid] = secs, size
            if i % 200 == 0:
                print(f"  {i}/{len(utterances)}", flush=True)

    stats = statistics(utterances, seconds, flac_bytes, version)
    with open(os.path.join(tmp_out, "manifest.json"), "w",
              encoding="utf-8") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    with open(os.path.join(tmp_out, "README.md"), "w", encoding="utf-8") as f:
        f.write(render_readme(stats))

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
