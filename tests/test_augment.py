"""Training-only augmentation of log-mel batches (models/augment.py)."""

import numpy as np
import pytest
import tensorflow as tf

from models import augment, config

N_MELS = config.N_MELS


def _batch(lengths, n_frames=None, seed=0):
    n_frames = n_frames or max(lengths)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal([len(lengths), n_frames, N_MELS]).astype(np.float32)
    x += 5.0  # no cell is 0 before masking
    x *= np.arange(n_frames)[None, :, None] < np.array(lengths)[:, None, None]
    return tf.constant(x), tf.constant(lengths, tf.int32)


def test_spec_augment_masks_whole_bands_inside_each_utterance():
    tf.random.set_seed(3)
    cfg = config.TrainConfig(freq_masks=2, freq_mask_fraction=0.3,
                             time_masks=2, time_mask_fraction=0.2)
    x, lengths = _batch([300, 120, 200])
    y = spec_augment_many(x, lengths, cfg, repeats=20)
    for out in y:
        out = out.numpy()
        for b, n in enumerate(lengths.numpy()):
            valid = out[b, :n]
            zero_bins = np.all(valid == 0, axis=0)
            zero_frames = np.all(valid == 0, axis=1)
            # Every zero cell lies in a masked band (bin column or frame row).
            cells = (valid == 0)
            assert np.all(cells == (zero_bins[None, :] | zero_frames[:, None]))
            assert zero_bins.sum() <= 2 * int(0.3 * N_MELS) + 2
            assert zero_frames.sum() <= 2 * int(0.2 * n) + 2
            # Padding stays padding.
            assert np.all(out[b, n:] == 0)
    masked = np.mean([np.mean(o.numpy() == 0) for o in y])
    assert masked > 0.05, "SpecAugment masked almost nothing"


def spec_augment_many(x, lengths, cfg, repeats):
    return [augment.spec_augment(x, lengths, cfg) for _ in range(repeats)]


def test_spec_augment_off_is_identity():
    x, lengths = _batch([50, 80])
    cfg = config.TrainConfig(freq_masks=0, time_masks=0)
    np.testing.assert_array_equal(augment.spec_augment(x, lengths, cfg), x)


def test_perturb_stretches_time_and_warps_mels():
    tf.random.set_seed(0)
    x, lengths = _batch([200, 100])
    cfg = config.TrainConfig(time_stretch=0.2, freq_warp=0.0)
    y, new_lengths = augment.perturb(x, lengths, cfg)
    rate = y.shape[1] / x.shape[1]
    assert rate != 1.0 and 0.8 <= rate <= 1.2
    np.testing.assert_allclose(new_lengths.numpy(),
                               np.round(lengths.numpy() * rate), atol=1)

    cfg = config.TrainConfig(time_stretch=0.0, freq_warp=0.1)
    warped, same_lengths = augment.perturb(x, lengths, cfg)
    assert warped.shape == x.shape
    np.testing.assert_array_equal(same_lengths, lengths)
    assert not np.allclose(warped, x)
    # Bin 0 maps onto itself whatever the warp.
    np.testing.assert_allclose(warped[:, :, 0], x[:, :, 0], rtol=1e-6)

    off = config.TrainConfig(time_stretch=0.0, freq_warp=0.0)
    same, _ = augment.perturb(x, lengths, off)
    np.testing.assert_array_equal(same, x)


def test_stretch_in_place_is_resize_within_the_same_frames():
    """The XLA form of the time stretch: the frames tf.image.resize gives,
    inside the batch's own width, the rate capped so the longest fits."""
    import tensorflow as tf

    from models import augment

    rng = np.random.default_rng(0)
    features = tf.constant(rng.standard_normal([2, 30, 8]), tf.float32)
    valid = features[:, :20]  # utterances of 20 frames, padded to 30
    lengths = tf.constant([20, 20])
    stretched, rate = augment.stretch_in_place(
        tf.concat([valid, tf.zeros([2, 10, 8])], 1), lengths, 1.1)
    assert stretched.shape == (2, 30, 8) and float(rate) == pytest.approx(1.1)
    reference = tf.image.resize(valid[..., tf.newaxis], [22, 8])[..., 0]
    # Up to the last frame, which here blends in the padding after the
    # utterance (as the dynamic path's resize of a padded batch does for
    # every utterance shorter than the batch).
    np.testing.assert_allclose(stretched[:, :21], reference[:, :21],
                               atol=1e-5)
    # A rate that would push the longest utterance past the width is capped.
    _, capped = augment.stretch_in_place(features, tf.constant([28, 5]), 1.2)
    assert float(capped) == pytest.approx(30 / 28)
