"""The learned subword vocabulary (`config.LEARNED_VOCABULARY`): WordPiece
pieces trained on the training split's transcripts inside the pipeline.

Transform learns it: `preprocessing.learn_wordpiece` is a TFT analyzer (a Beam PTransform run by
`tft.experimental.ptransform_analyzer` over the analysed split, which the
pipeline sets to train) that trains a Hugging Face `tokenizers` WordPiece
model of at most config.LEARNED_VOCAB_SIZE pieces on the transcripts and
writes them as an asset of the Transform graph, in WordPiece's vocab.txt
format (BERT's: one piece per line, line number = id). The vocabulary is
thus part of the TransformGraph artifact, with its lineage to the examples
it was learned from; the graph reads its pieces from the asset.

WordPiece rather than BPE because its encoding, greedy longest match first
over the word, is a few vectorised string ops (`tf_encode`), so tokenising
runs in the Transform graph beside the log-mel and nothing outside the graph
has to know the vocabulary (BPE merges are no TF op: the official BPE's ids
have to be written by the ExampleGen, models/bpe.py). Pieces are upper case
like the transcripts; a word's first piece is bare, later ones carry the
'##' prefix, and decoding joins them (a space before each bare piece).
Special ids: config.SPECIAL_TOKENS, then `<unk>` (UNK_ID), which a word
gets whole when some part of it has no piece; with the LibriSpeech alphabet
in the initial alphabet a validated transcript never needs it.

`encode` and `decode` are the `tokenizers` library's own, the reference the
graph's encoder and decoder are tested against (tests/test_wordpiece.py).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from models import config
from models import tokenizer

VOCAB_SIZE = config.LEARNED_VOCAB_SIZE
SPECIAL_TOKENS: Tuple[str, ...] = config.SPECIAL_TOKENS + ("<unk>",)
UNK_ID = len(config.SPECIAL_TOKENS)
PREFIX = "##"  # a piece that continues a word
# Longest word the encoder tokenises (tokenizers' default): longer is <unk>.
MAX_WORD_CHARS = 100
_ALPHABET = [c for c in config.CHARACTERS if not c.isspace()]


# --- The vocabulary (Python, `tokenizers`) ------------------------------------

def _tokenizer(vocab: Optional[Dict[str, int]] = None):
    """A `tokenizers` WordPiece tokenizer (untrained without `vocab`)."""
    import tokenizers  # pylint: disable=import-outside-toplevel
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.WordPiece(
        vocab, unk_token=SPECIAL_TOKENS[UNK_ID],
        continuing_subword_prefix=PREFIX,
        max_input_chars_per_word=MAX_WORD_CHARS))
    # Whitespace only: the apostrophe stays inside its word ("DON'T").
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix=PREFIX, cleanup=False)
    if vocab is not None:  # as training registers them: decoding skips them
        tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def train(transcripts: Iterable, vocab_size: int = VOCAB_SIZE) -> List[str]:
    """The pieces, in id order (specials first), of a WordPiece vocabulary
    of at most `vocab_size` trained on `transcripts` (in any order)."""
    from tokenizers import trainers  # pylint: disable=import-outside-toplevel

    tok = _tokenizer()
    # Sorted: the trainer breaks ties by input order, which Beam does not
    # keep, and the same transcripts must give the same vocabulary.
    tok.train_from_iterator(
        sorted(_as_text(t) for t in transcripts), trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=_ALPHABET, continuing_subword_prefix=PREFIX,
            show_progress=False))
    learned = set(tok.get_vocab()) - set(SPECIAL_TOKENS)
    # Ids in sorted order: the trainer's own order follows hash maps and
    # changes from run to run; the set of pieces does not (given no tie
    # in pair counts at the last merge, which a corpus of any size avoids).
    return list(SPECIAL_TOKENS) + sorted(learned)


def _as_text(text) -> str:
    return text.decode("utf-8", errors="replace") if isinstance(
        text, bytes) else str(text)


def write_pieces(pieces: Sequence[str], path: str) -> None:
    """The pieces as WordPiece's vocab.txt (BERT's format): one per line,
    line number = id."""
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(p + "\n" for p in pieces))


def read_pieces(path: str) -> List[str]:
    """write_pieces' inverse (any TF filesystem), checked against config."""
    with tf.io.gfile.GFile(path) as f:
        out = f.read().split("\n")[:-1]
    if tuple(out[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or not (
            len(SPECIAL_TOKENS) < len(out) <= VOCAB_SIZE):
        raise ValueError(f"{path}: not a learned vocabulary ({len(out)} "
                         f"pieces; needs {SPECIAL_TOKENS} first and at most "
                         f"config.LEARNED_VOCAB_SIZE = {VOCAB_SIZE})")
    return out


def encode(pieces: Sequence[str], text) -> List[int]:
    """The `tokenizers` ids of `text` (no <s>/</s>): tf_encode's reference."""
    return _tokenizer({p: i for i, p in enumerate(pieces)}).encode(
        _as_text(text)).ids


def decode(pieces: Sequence[str], ids: Sequence[int]) -> str:
    """The `tokenizers` text of ids (specials skipped): tf_decode's reference."""
    return _tokenizer({p: i for i, p in enumerate(pieces)}).decode(list(ids))


# --- Encoding and decoding (TensorFlow) -----------------------------------------

def _hashes(strings: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_hash_bucket_fast(strings, np.iinfo(np.int64).max)


def _lookup(keys: tf.Tensor, vocab: tf.Tensor, sorted_hashes: tf.Tensor,
            order: tf.Tensor) -> tf.Tensor:
    """Each key's id in vocab, -1 where it has none (hash, then exact
    string check)."""
    h = _hashes(keys)
    at = tf.minimum(tf.searchsorted(sorted_hashes, h),
                    tf.size(sorted_hashes, out_type=tf.int32) - 1)
    ids = tf.cast(tf.gather(order, at), tf.int64)
    hit = tf.equal(tf.gather(sorted_hashes, at), h) & tf.equal(
        tf.gather(vocab, ids), keys)
    return tf.where(hit, ids, -tf.ones_like(ids))


def tf_encode(transcripts: tf.Tensor, vocab: tf.Tensor,
              name: str = "wordpiece_encode") -> tf.RaggedTensor:
    """tf.string [B] -> int64 ids [B, (n)] (no <s>/</s>): what `encode`
    gives, by greedy longest match over each whitespace-split word."""
    with tf.name_scope(name):
        vocab = tf.convert_to_tensor(vocab, tf.string)
        order = tf.argsort(_hashes(vocab))
        sorted_hashes = tf.gather(_hashes(vocab), order)
        max_piece = tf.reduce_max(tf.strings.length(
            tf.strings.regex_replace(vocab, "^" + PREFIX, ""), "UTF8_CHAR"))
        words = tf.strings.split(transcripts)
        flat = words.flat_values
        length = tf.strings.length(flat, "UTF8_CHAR")
        n = tf.size(flat)
        widths = tf.range(1, max_piece + 1)  # candidate piece lengths

        def step(i, start, bad, emitted):
            active = (start < length) & tf.logical_not(bad)
            grid = [n, tf.size(widths)]
            cand = tf.strings.substr(
                tf.broadcast_to(flat[:, None], grid),
                tf.broadcast_to(start[:, None], grid),
                tf.broadcast_to(widths[None, :], grid), unit="UTF8_CHAR")
            cand = tf.where(start[:, None] > 0, PREFIX + cand, cand)
            ids = tf.reshape(_lookup(tf.reshape(cand, [-1]), vocab,
                                     sorted_hashes, order), grid)
            fits = start[:, None] + widths[None, :] <= length[:, None]
            hit = (ids >= 0) & fits
            # The longest hit: the last True along the widths.
            best = tf.argmax(tf.cast(hit, tf.int32) * widths[None, :], axis=1,
                             output_type=tf.int32)
            found = tf.reduce_any(hit, axis=1)
            token = tf.gather(ids, best, batch_dims=1)
            bad = bad | (active & tf.logical_not(found))
            emit = active & found
            emitted = emitted.write(i, tf.where(emit, token, -1))
            start = tf.where(emit, start + best + 1, start)
            return i + 1, start, bad, emitted

        too_long = length > MAX_WORD_CHARS
        # A first row of nothing, so the stack is [steps, n] even when no
        # word needs a step.
        nothing = -tf.ones([n], tf.int64)
        emitted = tf.TensorArray(tf.int64, size=0, dynamic_size=True,
                                 element_shape=[None]).write(0, nothing)
        _, _, bad, emitted = tf.while_loop(
            lambda i, start, bad, _: tf.reduce_any(
                (start < length) & tf.logical_not(bad)),
            step, (tf.constant(1), tf.zeros_like(length), too_long, emitted))
        per_word = tf.transpose(emitted.stack())
        # Each word: its pieces, or <unk> alone if part of it had none.
        good = tf.ragged.boolean_mask(
            per_word, (per_word >= 0) & tf.logical_not(bad)[:, None])
        unk = tf.ragged.boolean_mask(
            tf.fill([n, 1], tf.constant(UNK_ID, tf.int64)), bad[:, None])
        chosen = tf.concat([good, unk], axis=1)
        return tf.RaggedTensor.from_row_splits(
            chosen.flat_values,
            tf.gather(chosen.row_splits, words.row_splits))


def tf_decode(ids, vocab: Sequence[str], name: str = "wordpiece_decode"
              ) -> tf.Tensor:
    """int ids [B, N] (dense, or ragged) -> tf.string [B]: `decode` of each
    row's ids before its first EOS, specials and ids past the pieces
    skipped."""
    vocab = list(vocab)
    skip = np.arange(len(vocab)) < len(SPECIAL_TOKENS)
    continues = [p.startswith(PREFIX) for p in vocab]
    text = [p[len(PREFIX):] if c else " " + p for p, c in zip(vocab, continues)]
    with tf.name_scope(name):
        ids, keep = tokenizer.ids_to_decode(ids, len(vocab))
        keep &= tf.logical_not(tf.gather(tf.constant(skip), ids))
        pieces = tf.gather(tf.constant(text, tf.string, name="id_to_text"), ids)
        pieces = tf.where(keep, pieces, tf.zeros_like(pieces))
        joined = tf.strings.reduce_join(pieces, axis=1)
        return tf.strings.regex_replace(joined, "^ ", "", replace_global=False)
