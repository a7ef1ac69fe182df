"""models/tokenizer.py: the 31-symbol character vocabulary, Python and TF alike."""

import numpy as np
import pytest
import tensorflow as tf

from models import config, tokenizer

TEXTS = [
    "HE HOPED THERE WOULD BE STEW FOR DINNER",
    "i don't know what you're talking about",  # lower case, apostrophes
    "",
    "MR. SMITH, 42 YEARS-OLD!",  # digits and punctuation are dropped
    "CAFÉ ÆSIR NAÏVE ß",  # non-ASCII is dropped (no Unicode case mapping)
    "  DOUBLE  SPACES KEPT ",
]


def test_vocabulary():
    assert tokenizer.VOCAB_SIZE == len(config.VOCABULARY) == 31
    assert (config.PAD_ID, config.SOS_ID, config.EOS_ID) == (0, 1, 2)
    ids = tokenizer.encode("".join(config.CHARACTERS), add_special_tokens=False)
    assert ids == list(range(len(config.SPECIAL_TOKENS), config.VOCAB_SIZE))


def test_python_round_trip_and_special_tokens():
    text = "IT'S A TEST"
    ids = tokenizer.encode(text)
    assert ids[0] == config.SOS_ID and ids[-1] == config.EOS_ID
    assert config.SOS_ID not in ids[1:-1] and config.EOS_ID not in ids[1:-1]
    assert config.PAD_ID not in ids
    assert len(ids) == len(text) + 2
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode(text, add_special_tokens=False) == ids[1:-1]
    assert tokenizer.encode(text.lower()) == ids
    assert tokenizer.encode(text.encode()) == ids  # bytes as in tf.Examples


def test_unknown_characters_are_dropped():
    assert tokenizer.decode(tokenizer.encode("MR. SMITH, 42!")) == "MR SMITH "
    assert tokenizer.decode(tokenizer.encode("CAFÉ ß")) == "CAF "
    assert tokenizer.encode("123", add_special_tokens=False) == []


def test_decode_stops_at_eos_and_skips_pad_sos_and_unknown_ids():
    a, b = tokenizer.encode("AB", add_special_tokens=False)
    ids = [config.SOS_ID, a, config.PAD_ID, config.SOS_ID, b, 99, -1,
           config.EOS_ID, a, a]
    assert tokenizer.decode(ids) == "AB"
    assert tokenizer.decode(np.array(ids)) == "AB"
    assert tokenizer.decode([config.EOS_ID, a]) == ""
    assert tokenizer.decode([]) == ""


def test_tf_encode_matches_python():
    ragged = tokenizer.tf_encode(tf.constant(TEXTS))
    assert isinstance(ragged, tf.RaggedTensor)
    assert ragged.dtype == tf.int64
    assert ragged.to_list() == [tokenizer.encode(t) for t in TEXTS]
    bare = tokenizer.tf_encode(tf.constant(TEXTS), add_special_tokens=False)
    assert bare.to_list() == [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]


def test_tf_encode_handles_invalid_utf8_like_python():
    raw = [b"AB\xff\xfeC", b"\xc3"]
    got = tokenizer.tf_encode(tf.constant(raw)).to_list()
    assert got == [tokenizer.encode(r) for r in raw]
    assert tokenizer.decode(got[0]) == "ABC"


def test_tf_decode_matches_python():
    ids = tokenizer.tf_encode(tf.constant(TEXTS)).to_tensor(config.PAD_ID)
    # Garbage after EOS, as greedy decoding leaves in a fixed-size buffer.
    ids = tf.concat([ids, tf.fill([len(TEXTS), 3], tf.constant(5, tf.int64))], axis=1)
    decoded = tokenizer.tf_decode(ids).numpy()
    assert decoded.dtype == object and decoded.shape == (len(TEXTS),)
    assert [d.decode() for d in decoded] == [tokenizer.decode(r) for r in ids.numpy()]
    assert decoded[0].decode() == TEXTS[0]
    assert decoded[1].decode() == TEXTS[1].upper()


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_tf_decode_edge_cases(dtype):
    ids = tf.constant([[config.SOS_ID, 10, config.PAD_ID, 11, 99, config.EOS_ID, 12],
                       [config.EOS_ID, 10, 10, 10, 10, 10, 10],
                       [-3, 10, 11, 12, 13, 14, 15]], dtype)
    expected = [tokenizer.decode(r) for r in ids.numpy()]
    assert [d.decode() for d in tokenizer.tf_decode(ids).numpy()] == expected
    assert tokenizer.tf_decode(tf.zeros([2, 0], dtype)).numpy().tolist() == [b"", b""]


def test_tf_functions_in_a_saved_model(tmp_path):
    module = tf.Module()
    module.encode = tf.function(
        lambda s: tokenizer.tf_encode(s).to_tensor(config.PAD_ID),
        input_signature=[tf.TensorSpec([None], tf.string)])
    module.decode = tf.function(
        tokenizer.tf_decode, input_signature=[tf.TensorSpec([None, None], tf.int64)])
    module.encode.get_concrete_function()
    module.decode.get_concrete_function()
    tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    texts = ["HELLO WORLD", "IT'S"]
    out = loaded.decode(loaded.encode(tf.constant(texts)))
    assert [o.decode() for o in out.numpy()] == texts
