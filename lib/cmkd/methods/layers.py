"""Named feature layers for the feature-based methods (FitNet, Review, RKD, SHAKE).

A method reads a model's layers by the names of its ``feature_shapes`` (the Backbone contract,
:mod:`cmkd.models.base`): ``(dim,)`` vectors, ``(channels, None, None)`` maps.  This module checks
a name against them (a wrong one is refused with the list of the names that exist), picks the
default layers ('auto'), and matches a teacher map's spatial size to the student's.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cmkd.params import ParamError

#: The layer name that asks the method for its default choice.
AUTO = "auto"


def feature_shapes(model: nn.Module, role: str, method: str) -> dict[str, tuple]:
    """``model.feature_shapes`` (a ValueError naming the role when it has none or lacks
    'pooled')."""
    shapes = getattr(model, "feature_shapes", None)
    if not isinstance(shapes, Mapping) or "pooled" not in shapes:
        raise ValueError(f"method {method!r} reads the {role}'s features by name: the {role} "
                         f"model must announce them in a 'feature_shapes' dict with 'pooled' "
                         f"(the Backbone contract), got {shapes!r}")
    return dict(shapes)


def is_map(shape: tuple) -> bool:
    """True for a (channels, H, W) map, False for a (dim,) vector."""
    return len(shape) == 3


def check_layer(name: str, shapes: Mapping[str, tuple], *, param: str, method: str,
                role: str, maps: bool = True) -> str:
    """``name`` if it is one of the model's features of a usable layout, else a ParamError
    naming the parameter and listing the features the model has.

    maps : whether (channels, H, W) maps are usable (vectors always are); 3-d video maps never.
    """
    if name not in shapes:
        close = difflib.get_close_matches(str(name), list(shapes), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParamError(param, f"the {role} has no feature {name!r}{hint}; its features are "
                                f"{', '.join(shapes)}", f"method {method!r}")
    shape = tuple(shapes[name])
    if len(shape) not in ((1, 3) if maps else (1,)):
        usable = [n for n, s in shapes.items() if len(s) in ((1, 3) if maps else (1,))]
        layout = "(dim,) vectors or (channels, H, W) maps" if maps else "(dim,) vectors"
        raise ParamError(param, f"the {role}'s feature {name!r} has layout {shape}; this method "
                                f"takes {layout}: choose one of {', '.join(usable)}",
                         f"method {method!r}")
    return name


def middle_layer(shapes: Mapping[str, tuple]) -> str:
    """The default hint layer: the middle one (the lower middle for an even count) of the
    features other than 'pooled' that are vectors or 2-d maps; 'pooled' when there is none.

    For a ResNet (layer1..layer4) this is 'layer2', mdistiller's FitNet hint layer 2.
    """
    names = [n for n, s in shapes.items() if n != "pooled" and len(s) in (1, 3)]
    return names[(len(names) - 1) // 2] if names else "pooled"


def map_layers(shapes: Mapping[str, tuple]) -> list[str]:
    """The names of the (channels, H, W) maps, input to output."""
    return [n for n, s in shapes.items() if is_map(s)]


def resolve_pairs(student: Sequence[str], teacher: Sequence[str], *, method: str
                  ) -> list[tuple[str, str]]:
    """Pair the student's and the teacher's layer lists, refusing unequal lengths."""
    if len(student) != len(teacher):
        raise ParamError("teacher_layers", f"needs one teacher layer per student layer: got "
                                           f"{len(student)} student layer(s) {list(student)} and "
                                           f"{len(teacher)} teacher layer(s) {list(teacher)}",
                         f"method {method!r}")
    return list(zip(student, teacher))


def match_spatial(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """The teacher's (batch, C, H_t, W_t) map adaptively average-pooled to the student map's
    (H_s, W_s) when they differ (a crossmodal pair sees inputs of different sizes); vectors and
    equal sizes pass unchanged.  A teacher map smaller than the student's is spread over the
    larger grid (each output cell averages the one or two input cells it overlaps)."""
    if teacher.dim() == 4 and teacher.shape[-2:] != student.shape[-2:]:
        return F.adaptive_avg_pool2d(teacher, student.shape[-2:])
    return teacher


def is_dense_model(model: nn.Module) -> bool:
    """Whether ``model`` gives per-pixel logits (a segmentation network: ``dense = True``)."""
    return bool(getattr(model, "dense", False))


def dense_head_logits(head: nn.Module, feature: torch.Tensor, size: tuple[int, int]
                      ) -> torch.Tensor:
    """A per-pixel head (:class:`cmkd.models.proxy.DenseProxyHead`) on a (batch, C, h, w) map,
    its logits bilinearly upsampled to the labels' (H, W), as the segmentation network's own."""
    return F.interpolate(head(feature), size=tuple(size), mode="bilinear", align_corners=False)
