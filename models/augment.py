"""Training-only augmentation of padded log-mel batches.

SpecAugment (Park et al. 2019) and feature-space stand-ins for speed
perturbation and VTLP (Ko et al. 2015; Jaitly & Hinton 2013), all sized by
`config.TrainConfig`. They act on log-mel cells, so only a front end whose
`config.FrontEnd.augmentable` is set gets them; eval and serving never do.
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from models import config


def _band_masks(n_masks: int, extent, max_fraction: float, size: int,
                batch) -> tf.Tensor:
    """[batch, size] True where any of n_masks random bands covers a cell.

    extent is each example's own size (scalar or [batch]); a band's width is
    uniform in [0, max_fraction * extent] and it lies wholly inside the extent.
    """
    extent = tf.broadcast_to(tf.cast(extent, tf.float32), [batch])
    positions = tf.range(size)[tf.newaxis, :]
    covered = tf.zeros([batch, size], tf.bool)
    for _ in range(n_masks):
        width = tf.floor(tf.random.uniform([batch])
                         * (max_fraction * extent + 1.0))
        start = tf.floor(tf.random.uniform([batch])
                         * tf.maximum(extent - width + 1.0, 1.0))
        start, width = tf.cast(start, tf.int32), tf.cast(width, tf.int32)
        covered |= ((positions >= start[:, tf.newaxis])
                    & (positions < (start + width)[:, tf.newaxis]))
    return covered


def spec_augment(features: tf.Tensor, lengths: tf.Tensor,
                 train_cfg: config.TrainConfig) -> tf.Tensor:
    """Frequency and time masks over a padded [batch, frames, mels] batch.

    Masked cells become 0, the training mean of the normalised log-mel; time
    masks stay inside each utterance's own frames.
    """
    batch, n_frames = tf.shape(features)[0], tf.shape(features)[1]
    n_mels = features.shape[-1]
    keep = tf.ones_like(features, tf.bool)
    if train_cfg.freq_masks:
        keep &= ~_band_masks(train_cfg.freq_masks, n_mels,
                             train_cfg.freq_mask_fraction, n_mels,
                             batch)[:, tf.newaxis, :]
    if train_cfg.time_masks:
        keep &= ~_band_masks(train_cfg.time_masks, lengths,
                             train_cfg.time_mask_fraction, n_frames,
                             batch)[:, :, tf.newaxis]
    return tf.where(keep, features, tf.zeros_like(features))


def _interpolate(features: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Linear interpolation of [batch, time, mels] at fractional mel positions
    [batch, mels]."""
    n_mels = features.shape[-1]
    low = tf.clip_by_value(tf.floor(positions), 0.0, n_mels - 1.0)
    frac = (positions - low)[:, tf.newaxis, :]
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, n_mels - 1)
    take = lambda idx: tf.gather(features, idx, axis=2, batch_dims=1)  # noqa
    return take(low) * (1.0 - frac) + take(high) * frac


def stretch_in_place(features: tf.Tensor, lengths: tf.Tensor, rate
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
    """features [B, T, mels] stretched in time by `rate` within the same T
    frames (linear interpolation at half-pixel centres, as tf.image.resize
    samples), the rate lowered where the longest utterance would no longer
    fit: the form of the time stretch an XLA-compiled step can take, whose
    shapes may not depend on the rate. -> (stretched, the rate applied)."""
    width = tf.shape(features)[1]
    longest = tf.cast(tf.maximum(tf.reduce_max(lengths), 1), tf.float32)
    rate = tf.minimum(rate, tf.cast(width, tf.float32) / longest)
    source = (tf.range(width, dtype=tf.float32) + 0.5) / rate - 0.5
    source = tf.clip_by_value(source, 0.0, tf.cast(width - 1, tf.float32))
    low = tf.floor(source)
    frac = (source - low)[tf.newaxis, :, tf.newaxis]
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, width - 1)
    stretched = (tf.gather(features, low, axis=1) * (1.0 - frac)
                 + tf.gather(features, high, axis=1) * frac)
    return stretched, rate


def perturb(features: tf.Tensor, lengths: tf.Tensor,
            train_cfg: config.TrainConfig, static_shapes: bool = False):
    """Random time stretch (per batch) and mel-axis warp (per utterance);
    static_shapes keeps the frame count (stretch_in_place).

    Returns the perturbed features and their new lengths in frames.
    """
    if train_cfg.time_stretch:
        rate = tf.random.uniform([], 1.0 - train_cfg.time_stretch,
                                 1.0 + train_cfg.time_stretch)
        if static_shapes:
            features, rate = stretch_in_place(features, lengths, rate)
            new_frames = tf.shape(features)[1]
        else:
            n_frames = tf.cast(tf.shape(features)[1], tf.float32)
            new_frames = tf.maximum(
                tf.cast(tf.round(n_frames * rate), tf.int32), 1)
            features = tf.image.resize(features[..., tf.newaxis],
                                       [new_frames, features.shape[-1]])[..., 0]
        lengths = tf.minimum(
            tf.cast(tf.round(tf.cast(lengths, tf.float32) * rate), tf.int32),
            new_frames)
    if train_cfg.freq_warp:
        batch, n_mels = tf.shape(features)[0], features.shape[-1]
        warp = tf.random.uniform([batch, 1], 1.0 - train_cfg.freq_warp,
                                 1.0 + train_cfg.freq_warp)
        # A warp above 1 moves formants up, as a shorter vocal tract does.
        positions = tf.range(n_mels, dtype=tf.float32)[tf.newaxis, :] / warp
        features = _interpolate(features, positions)
    return features, lengths


def augment(features: tf.Tensor, lengths: tf.Tensor,
            train_cfg: config.TrainConfig, static_shapes: bool = False):
    """The whole training-time augmentation: perturb, then SpecAugment."""
    features, lengths = perturb(features, lengths, train_cfg, static_shapes)
    return spec_augment(features, lengths, train_cfg), lengths
