"""Any registered network stacked over runs with ``torch.func``: :class:`Stacked`.

``Stacked(models)`` holds the parameters and buffers of ``R`` copies of one architecture stacked
along a leading run dimension (``torch.func.stack_module_state``) and computes all of them at once
with ``torch.func.vmap`` over ``torch.func.functional_call``: inputs (R, batch, ...) -> logits
(R, batch, classes), features (R, batch, ...).  Batch norm trains per run (its running statistics
are stacked buffers too); dropout draws differently per run.

The registry's ``mlp`` has its own stacked form with grouped layers
(:class:`cmkd.models.batched.BatchedMLP`); :func:`cmkd.models.stacked` picks it and falls back to
this class for every other network.  Whether stacking pays depends on the model and the device:
on a CPU a compute-bound CNN gains nothing (``make bench ONLY=engine``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class _Features(nn.Module):
    """``forward`` = the wrapped network's ``forward_features`` (for functional_call)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *inputs):
        return self.net.forward_features(*inputs)


class Stacked(nn.Module):
    """``R`` independent copies of one network, computed together; see the module docstring.

    Parameters
    ----------
    models : R networks of the same architecture (their current weights are copied).

    Attributes
    ----------
    n_runs, classes, modalities, feature_shapes : the runs and the network's contract.
    stack : a copy of the network whose every parameter and buffer holds the runs along its
        first dimension (the state dict keys are the network's, prefixed 'stack.').
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("Stacked needs at least one model")
        kinds = {type(m) for m in models}
        if len(kinds) != 1:
            raise ValueError(f"Stacked needs models of one architecture, got "
                             f"{sorted(k.__name__ for k in kinds)}")
        params, buffers = stack_module_state(models)
        self.n_runs = len(models)
        first = models[0]
        self.classes = getattr(first, "classes", None)
        self.modalities = getattr(first, "modalities", None)
        shapes = getattr(first, "feature_shapes", None)
        if shapes is not None:
            self.feature_shapes = dict(shapes)
        self.stack = copy.deepcopy(first)
        for name, value in params.items():
            _set(self.stack, name, nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            _set(self.stack, name, value.detach().clone(), buffer=True)
        # the computation runs on a weightless copy ('meta'), fed the stacked tensors
        self._net = [copy.deepcopy(first).to("meta")]
        self._features = [_Features(self._net[0])]

    def train(self, mode: bool = True) -> Stacked:
        super().train(mode)
        self._net[0].train(mode)
        return self

    def _tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        named = dict(self.stack.named_parameters())
        named.update(dict(self.stack.named_buffers()))
        return {prefix + k: v for k, v in named.items()}

    def _vmapped(self, module: nn.Module, prefix: str, inputs: tuple):
        tensors = self._tensors(prefix)

        def one(state, *xs):
            return functional_call(module, state, xs)

        return vmap(one, randomness="different")(tensors, *inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Logits (R, batch, classes) of inputs (R, batch, ...)."""
        self._check(inputs)
        return self._vmapped(self._net[0], "", inputs)

    def forward_features(self, *inputs: torch.Tensor):
        """``(logits (R, batch, classes), {name: (R, batch, ...)})``."""
        self._check(inputs)
        return self._vmapped(self._features[0], "net.", inputs)

    def blocks(self) -> list[nn.Module]:
        """The stacked network's blocks (``blocks()`` of the Backbone contract), holding the
        stacked parameters."""
        return list(self.stack.blocks())

    def _check(self, inputs: tuple) -> None:
        bad = [tuple(x.shape) for x in inputs if x.dim() < 2 or x.shape[0] != self.n_runs]
        if bad:
            raise ValueError(f"a stack of {self.n_runs} runs takes inputs (runs, batch, ...), "
                             f"got shapes {bad}")


def _set(module: nn.Module, name: str, value, buffer: bool = False) -> None:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    if buffer:
        module.register_buffer(leaf, value)
    else:
        setattr(module, leaf, value)
