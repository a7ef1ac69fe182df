"""The official Moonshine BPE vocabulary (`config.MOONSHINE_BPE_VOCABULARY`).

`assets/moonshine_bpe_tokenizer.json` is useful-moonshine's
`moonshine/assets/tokenizer.json` (release 20241016, MIT licence; see
`assets/README.md`), byte for byte: a Hugging Face `tokenizers` BPE of 32,000
sentencepiece-style pieces ('▁' marks a word start, a character outside the
pieces falls back to '<0xNN>' byte pieces) plus 768 reserved special ids.

Encoding runs in Python with the `tokenizers` library, because BPE merges
are no TensorFlow op: the ExampleGen calls `encode` when it writes the raw
examples, and Transform only adds <s> and </s>. Text is first normalised by
`normalize` (lower case, single spaces): LibriSpeech transcripts are upper
case, and upper-case words are rare, long splits in this vocabulary ("HELLO"
is '▁HE' 'LL' 'O', "hello" is '▁hello'); the apostrophe, LibriSpeech's only
punctuation, is kept. The official model writes mixed case and punctuation,
so a model fine-tuned here writes lower case; WER and CER casefold both sides
before scoring (models/metrics.py), so neither is penalised for it.

Decoding runs inside the serving graph and needs no library, only constant
tables read from the same file: each id's bytes ('▁' -> ' ', '<0xNN>' -> the
byte NN, special ids -> nothing) are joined and one leading space is
stripped, which is what the tokenizer's own decoder (Replace, ByteFallback,
Fuse, Strip) does with special tokens skipped. A run of byte pieces that is
not valid UTF-8 becomes one U+FFFD per byte, as ByteFallback makes it. Like
`tokenizer.tf_decode`, decoding stops at the first EOS_ID and skips ids
outside the vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import List, Tuple, Union

import numpy as np
import tensorflow as tf

from models import config
from models import tokenizer

TOKENIZER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "assets", "moonshine_bpe_tokenizer.json")
VOCAB_SIZE = config.MOONSHINE_BPE_VOCAB_SIZE
SOS_ID = config.SOS_ID
EOS_ID = config.EOS_ID

_WORD_START = "\u2581"  # '▁', sentencepiece's space
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_REPLACEMENT = "\ufffd".encode("utf-8")


@dataclasses.dataclass(frozen=True)
class Tables:
    """Per id: the bytes it decodes to; is it a byte piece, a special id."""
    pieces: Tuple[bytes, ...]
    is_byte: np.ndarray  # bool [VOCAB_SIZE]
    is_special: np.ndarray  # bool [VOCAB_SIZE]


@functools.lru_cache(maxsize=None)
def tables(path: str = TOKENIZER_FILE) -> Tables:
    """The decoding tables of a tokenizer.json (checked against config)."""
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    names = {i: piece for piece, i in spec["model"]["vocab"].items()}
    special = set()
    for added in spec["added_tokens"]:
        names[added["id"]] = added["content"]
        if added["special"]:
            special.add(added["id"])
    if sorted(names) != list(range(VOCAB_SIZE)):
        raise ValueError(
            f"{path}: ids 0..{max(names)} ({len(names)} of them); "
            f"config.MOONSHINE_BPE_VOCAB_SIZE is {VOCAB_SIZE}")
    for token_id, expected in ((SOS_ID, "<s>"), (EOS_ID, "</s>")):
        if names[token_id] != expected or token_id not in special:
            raise ValueError(f"{path}: id {token_id} is {names[token_id]!r}, "
                             f"not the special {expected!r}")
    pieces, is_byte = [], np.zeros(VOCAB_SIZE, bool)
    for token_id in range(VOCAB_SIZE):
        name = names[token_id]
        match = _BYTE_PIECE.match(name)
        if token_id in special:
            pieces.append(b"")
        elif match:
            pieces.append(bytes([int(match.group(1), 16)]))
            is_byte[token_id] = True
        else:
            pieces.append(name.replace(_WORD_START, " ").encode("utf-8"))
    is_special = np.zeros(VOCAB_SIZE, bool)
    is_special[sorted(special)] = True
    return Tables(tuple(pieces), is_byte, is_special)


# --- Encoding (Python, `tokenizers`) -----------------------------------------

@functools.lru_cache(maxsize=None)
def _tokenizer():
    # Imported here: serving and training decode without the library.
    import tokenizers  # pylint: disable=import-outside-toplevel
    return tokenizers.Tokenizer.from_file(TOKENIZER_FILE)


def normalize(text: Union[str, bytes]) -> str:
    """The text BPE sees: lower case, whitespace collapsed to single spaces."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return " ".join(text.lower().split())


def encode(text: Union[str, bytes], add_special_tokens: bool = True
           ) -> List[int]:
    """Text -> BPE ids of `normalize(text)`, `[SOS_ID, ..., EOS_ID]` unless
    `add_special_tokens=False`."""
    ids = _tokenizer().encode(normalize(text), add_special_tokens=False).ids
    return [SOS_ID] + ids + [EOS_ID] if add_special_tokens else list(ids)


# --- Decoding (TensorFlow, constant tables) ----------------------------------

def tf_decode(ids, name: str = "moonshine_bpe_decode") -> tf.Tensor:
    """int ids [B, N] (dense, or ragged) -> tf.string [B]: the text the
    official tokenizer decodes from each row's ids before its first EOS."""
    t = tables()
    with tf.name_scope(name):
        ids, keep = tokenizer.ids_to_decode(ids, VOCAB_SIZE)
        special = tf.gather(tf.constant(t.is_special, name="is_special"), ids)
        kept = tf.ragged.boolean_mask(ids, keep & tf.logical_not(special))
        flat = kept.flat_values
        pieces = tf.gather(tf.constant(t.pieces, tf.string, name="id_to_bytes"),
                           flat)
        is_byte = tf.gather(tf.constant(t.is_byte, name="is_byte"), flat)
        rows = kept.value_rowids()
        # Runs: each ordinary piece alone, and each row's maximal sequences
        # of byte pieces, which ByteFallback decodes (or replaces) together.
        first_in_row = tf.equal(
            tf.range(tf.size(flat, out_type=tf.int64)),
            tf.gather(kept.row_starts(), rows))
        after_byte = tf.concat([[False], is_byte[:-1]], axis=0)
        starts = first_in_row | tf.logical_not(is_byte) | tf.logical_not(
            after_byte)
        run = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        n_runs = tf.reduce_sum(tf.cast(starts, tf.int64))
        text = tf.strings.unsorted_segment_join(pieces, run, n_runs)
        valid = tf.equal(text, tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace",
            replacement_char=0xFFFD))
        replaced = tf.strings.unsorted_segment_join(
            tf.fill(tf.shape(flat), _REPLACEMENT), run, n_runs)
        invalid_bytes = tf.boolean_mask(is_byte, starts) & tf.logical_not(
            valid)
        text = tf.where(invalid_bytes, replaced, text)
        text = tf.strings.unsorted_segment_join(
            text, tf.boolean_mask(rows, starts), kept.nrows())
        # The decoder's Strip: one leading space, the first word's '▁'.
        return tf.strings.regex_replace(text, "^ ", "", replace_global=False)
