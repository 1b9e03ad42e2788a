"""Stacked runs of small models: ``R`` independent models as one module whose tensors carry a
leading run dimension (inputs (R, n, D) -> outputs (R, n, C)).

A stack trains as one tensor program: the engine (:func:`cmkd.engine.fit`) sums the runs' losses,
so each run's gradient is its own.  Two ways to stack (:func:`cmkd.models.stacked`):

* grouped layers (this module): :class:`BatchedLinear` (one ``bmm`` for all runs),
  :class:`BatchedBatchNorm` and :class:`BatchedMLP`, the stacked form of the registry's ``mlp``;
  run ``r``'s layers are initialised like ``nn.Linear`` from its own seed.  On a CPU this is
  where stacking pays (``make bench ONLY=engine``).
* any other registered network through ``torch.func`` (:class:`cmkd.models.stack.Stacked`).

Every parameter and buffer of a stacked model holds the runs along its first dimension (the
state of run ``r`` is ``{k: v[r]}``), except :class:`BatchedBatchNorm`'s, which holds them in
``R * channels`` rows (used by the proxy heads of methods, never by a stacked student or teacher).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def init_linear_batched(n_features: Sequence[int], width: int, classes: int,
                        seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's default ``nn.Linear`` initialisation for ``R`` runs, zero-padded to ``width``.

    Run ``r`` has ``n_features[r]`` real input channels; weights and bias are uniform in
    ``+-1/sqrt(n_features[r])`` drawn from a generator seeded with ``seeds[r]``; the padded
    channels get zero weight.

    Returns
    -------
    weight : (R, width, classes) float32, bias : (R, classes) float32
    """
    if len(n_features) != len(seeds):
        raise ValueError("n_features and seeds must have one entry per run")
    weight = torch.zeros(len(seeds), width, classes)
    bias = torch.zeros(len(seeds), classes)
    for r, (d, s) in enumerate(zip(n_features, seeds)):
        if not 0 < d <= width:
            raise ValueError(f"run {r}: n_features must lie in [1, {width}], got {d}")
        g = torch.Generator().manual_seed(int(s))
        bound = 1.0 / d**0.5
        # drawn in nn.Linear's (out, in) layout, then transposed to (in, out)
        weight[r, :d] = (torch.rand(classes, d, generator=g) * 2 - 1).mul_(bound).T
        bias[r] = (torch.rand(classes, generator=g) * 2 - 1).mul_(bound)
    return weight, bias


def linear_logits(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor
                  ) -> torch.Tensor:
    """``R`` linear maps at once: x (R, n, D), weight (R, D, C), bias (R, C) -> (R, n, C)."""
    if bias is None:
        return torch.bmm(x, weight)
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


class BatchedLinear(nn.Module):
    """``R`` linear maps: (R, n, in) -> (R, n, out); weight (R, in, out), bias (R, out).

    Built from seeds (:func:`init_linear_batched`, run ``r`` from ``seeds[r]``), or around given
    tensors with :meth:`from_weights` (e.g. zero-padded runs of different input widths).
    """

    def __init__(self, in_features: int, out_features: int, seeds: Sequence[int],
                 bias: bool = True):
        super().__init__()
        w, b = init_linear_batched([in_features] * len(seeds), in_features, out_features, seeds)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b) if bias else None

    @classmethod
    def from_weights(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> BatchedLinear:
        """A BatchedLinear whose parameters are copies of ``weight`` (R, in, out) and ``bias``
        (R, out) (or None)."""
        if weight.dim() != 3 or (bias is not None and bias.shape != (weight.shape[0],
                                                                      weight.shape[2])):
            raise ValueError(f"expected weight (R, in, out) and bias (R, out), got "
                             f"{tuple(weight.shape)} and "
                             f"{None if bias is None else tuple(bias.shape)}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.weight = nn.Parameter(weight.detach().clone())
        layer.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_logits(self.weight, self.bias, x)


class BatchedBatchNorm(nn.Module):
    """Batch norm per run and channel over the samples: (R, n, C) -> (R, n, C)."""

    def __init__(self, runs: int, channels: int):
        super().__init__()
        self.runs, self.channels = runs, channels
        self.bn = nn.BatchNorm1d(runs * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, n, c = x.shape
        y = self.bn(x.permute(1, 0, 2).reshape(n, r * c))
        return y.reshape(n, r, c).permute(1, 0, 2)


class BatchedMLP(nn.Sequential):
    """Linear -> ReLU -> ... -> Linear for R runs: the stacked form of the registry's ``mlp``.

    Parameters
    ----------
    in_features : input width; hidden : widths of the hidden layers; classes : outputs
    seeds : one base seed per run (layer l of run r is initialised from ``seeds[r] + l``)
    modality : the batch key it reads (the Backbone contract's ``modalities``)

    Attributes
    ----------
    n_runs, classes, modalities
    feature_shapes : ``{'pooled': (hidden[-1],)}``: what :meth:`forward_features` returns per
        run (the last hidden layer), so methods built with ``runs=True`` read it by name.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], classes: int,
                 seeds: Sequence[int], *, modality: str = "input"):
        widths = [in_features, *hidden, classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(BatchedLinear(a, b, [s + i for s in seeds]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.n_runs, self.classes, self.modalities = len(seeds), classes, (modality,)
        self.feature_shapes = {"pooled": (widths[-2],)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (after its ReLU): (R, n, D) -> (R, n, hidden[-1])."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer applied to :meth:`features`."""
        return self[-1](features)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(logits (R, n, classes), {'pooled': features (R, n, hidden[-1])})``."""
        f = self.features(x)
        return self.head(f), {"pooled": f}

    def blocks(self) -> list[nn.Module]:
        """The linear layers, input to output (what "the top k layers" of a teacher means)."""
        return [m for m in self if isinstance(m, BatchedLinear)]


def run_count(model: nn.Module) -> int:
    """The number of runs R of a stacked model (its ``n_runs``)."""
    runs = getattr(model, "n_runs", None)
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs=True needs a stacked model (cmkd.models.stacked: a batched MLP "
                         f"or cmkd.models.Stacked, with an 'n_runs' attribute); "
                         f"{type(model).__name__} is not one")
    return runs


def run_state(state: dict[str, torch.Tensor], run: int) -> dict[str, torch.Tensor]:
    """The state of run ``run`` of a stacked model's state dict (each tensor's row ``run``)."""
    return {k: v[run] for k, v in state.items()}


def merge_runs(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One stacked state whose run ``r`` comes from ``states[r]`` (states of the same stacked
    model, e.g. each run's best-validation epoch)."""
    if not states:
        raise ValueError("merge_runs needs at least one state")
    return {k: torch.stack([s[k][r] for r, s in enumerate(states)]) for k in states[0]}
