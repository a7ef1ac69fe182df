"""The 31-symbol character tokenizer (`config.VOCABULARY`), in Python and TensorFlow.

Ids: `PAD_ID`, `SOS_ID`, `EOS_ID`, then one id per `config.CHARACTERS` entry
(space, apostrophe, A-Z). Encoding upper-cases ASCII letters (the table maps
`a` and `A` to the same id) and drops every other character not in the
vocabulary (digits, punctuation other than the apostrophe, non-ASCII), the
same way in Python and in TensorFlow. Decoding stops at the first `EOS_ID`,
skips `PAD_ID`/`SOS_ID` and ids outside the vocabulary, and returns the
characters as they are (no whitespace clean-up: scoring normalises text).

The TF versions need no lookup tables (nothing to initialise in TFT or in a
SavedModel): `tf_encode` gathers byte values through a 256-entry constant id
map and `tf_decode` gathers ids through a constant string table.
"""

from __future__ import annotations

from typing import Iterable, List, Union

import numpy as np
import tensorflow as tf

from models import config

PAD_ID = config.PAD_ID
SOS_ID = config.SOS_ID
EOS_ID = config.EOS_ID
VOCAB_SIZE = config.VOCAB_SIZE
_UNKNOWN = -1


def _build_byte_to_id() -> np.ndarray:
    table = np.full(256, _UNKNOWN, dtype=np.int64)
    for token_id, symbol in enumerate(config.VOCABULARY):
        if symbol in config.SPECIAL_TOKENS:
            continue
        assert len(symbol) == 1 and ord(symbol) < 128, symbol
        table[ord(symbol)] = token_id
        table[ord(symbol.lower())] = token_id
    return table


# Byte value (ASCII code point) -> token id, or -1 for "drop".
BYTE_TO_ID: np.ndarray = _build_byte_to_id()
BYTE_TO_ID.setflags(write=False)
# Token id -> text; special tokens decode to nothing.
ID_TO_TEXT: tuple = tuple(
    "" if s in config.SPECIAL_TOKENS else s for s in config.VOCABULARY)

_SPECIAL_IDS = frozenset({PAD_ID, SOS_ID})


def _as_text(text: Union[str, bytes]) -> str:
    if isinstance(text, bytes):
        return text.decode("utf-8", errors="replace")
    return str(text)


def encode(text: Union[str, bytes], add_special_tokens: bool = True) -> List[int]:
    """Text -> ids, `[SOS_ID, ..., EOS_ID]` unless `add_special_tokens=False`."""
    ids = []
    for ch in _as_text(text):
        code = ord(ch)
        if code < 256 and BYTE_TO_ID[code] != _UNKNOWN:
            ids.append(int(BYTE_TO_ID[code]))
    if add_special_tokens:
        ids = [SOS_ID] + ids + [EOS_ID]
    return ids


def decode(ids: Iterable[int]) -> str:
    """Ids -> text: stops at the first EOS, skips PAD/SOS and unknown ids."""
    out = []
    if not hasattr(ids, "__array__") and not isinstance(ids, (list, tuple)):
        ids = list(ids)  # a generator or other iterable
    for token_id in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
        if token_id == EOS_ID:
            break
        if token_id in _SPECIAL_IDS or not 0 <= token_id < VOCAB_SIZE:
            continue
        out.append(ID_TO_TEXT[token_id])
    return "".join(out)


def tf_encode(transcripts, add_special_tokens: bool = True,
              name: str = "tf_encode") -> tf.RaggedTensor:
    """tf.string [B] -> int64 RaggedTensor [B, (n)], `SOS ... EOS` per row.

    Same result as `encode` for every input (invalid UTF-8 is replaced, then
    dropped like any other out-of-vocabulary character).
    """
    with tf.name_scope(name):
        transcripts = tf.convert_to_tensor(transcripts, dtype=tf.string)
        transcripts.shape.with_rank(1)
        codepoints = tf.strings.unicode_decode(
            transcripts, "UTF-8", errors="replace", replacement_char=0xFFFD)
        codepoints = tf.cast(codepoints, tf.int64)
        table = tf.constant(BYTE_TO_ID, dtype=tf.int64, name="byte_to_id")
        in_range = codepoints.flat_values < 256
        flat_ids = tf.where(
            in_range,
            tf.gather(table, tf.clip_by_value(codepoints.flat_values, 0, 255)),
            tf.constant(_UNKNOWN, tf.int64))
        ids = codepoints.with_flat_values(flat_ids)
        ids = tf.ragged.boolean_mask(ids, ids >= 0)
        if add_special_tokens:
            batch = ids.nrows()
            sos = tf.fill(tf.stack([batch, 1]), tf.constant(SOS_ID, tf.int64))
            eos = tf.fill(tf.stack([batch, 1]), tf.constant(EOS_ID, tf.int64))
            ids = tf.concat([sos, ids, eos], axis=1)
        return ids


def ids_to_decode(ids, vocab_size: int = VOCAB_SIZE):
    """int ids [B, N] (dense, or ragged) -> (int64 ids clipped into the
    vocabulary, bool mask of the ids to decode: inside the vocabulary and
    before the row's first EOS_ID), both [B, N]."""
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(default_value=PAD_ID)
    ids = tf.cast(tf.convert_to_tensor(ids), tf.int64)
    ids.shape.with_rank(2)
    before_eos = tf.equal(
        tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1), 0)
    in_vocab = tf.logical_and(ids >= 0, ids < vocab_size)
    return (tf.clip_by_value(ids, 0, vocab_size - 1),
            tf.logical_and(before_eos, in_vocab))


def tf_decode(ids, name: str = "tf_decode") -> tf.Tensor:
    """int ids [B, N] (dense, or ragged) -> tf.string [B], as `decode` per row."""
    with tf.name_scope(name):
        ids, keep = ids_to_decode(ids)
        table = tf.constant(list(ID_TO_TEXT), dtype=tf.string, name="id_to_text")
        pieces = tf.gather(table, ids)
        pieces = tf.where(keep, pieces, tf.zeros_like(pieces))
        return tf.strings.reduce_join(pieces, axis=1)
