"""MFH Algorithm 1 (modality-general decisive feature ranking) and channel selection."""

from cmkd.mfh.gradcam import grad_cam
from cmkd.mfh.ranking import layer_features, rank_features
from cmkd.mfh.salience import (
    DISTANCES,
    NORMALIZATIONS,
    LayerHead,
    permutation_salience,
    random_permutations,
    split_sequential,
    train_aligned_pair,
)
from cmkd.mfh.selection import (
    KINDS,
    NullifiedModel,
    channel_mask,
    nullified_logits,
    nullify_channels,
    nullify_layer,
    recovery_rate,
    select_channels,
)

__all__ = [
    "DISTANCES",
    "NORMALIZATIONS",
    "KINDS",
    "LayerHead",
    "NullifiedModel",
    "channel_mask",
    "grad_cam",
    "layer_features",
    "rank_features",
    "nullify_channels",
    "nullify_layer",
    "nullified_logits",
    "permutation_salience",
    "random_permutations",
    "recovery_rate",
    "select_channels",
    "split_sequential",
    "train_aligned_pair",
]
