"""Late-fusion multimodal networks (C2KD Table 7's multimodal teachers) and OGM-GE's gradient rule.

Two unimodal encoders (any registered unimodal model, used as a feature extractor: its classifier
is replaced by ``nn.Identity``; by default ResNet-18 on a 1-channel spectrogram and ResNet-18 on one
RGB frame, as C2KD and OGM-GE) give pooled features ``a`` and ``b``; a fusion module joins them.
The fusion modules follow OGM-GE's official code (GeWu-Lab/OGM-GE_CVPR2022,
``models/fusion_modules.py``), which C2KD's Table 7 cites for its Cat / FiLM / OGM teachers:

- ``fusion_concat``: logits = Linear([a, b]) (``pooled`` is the concatenation).
- ``fusion_film`` (Perez et al., AAAI 2018): [gamma, beta] = Linear(a) (2 x dim b), ``pooled`` =
  gamma * b + beta, logits = Linear(pooled): the first modality conditions the second (the
  official ``x_film=True`` with inputs (audio, visual)).
- ``fusion_ogm_ge``: the concatenation network trained with OGM-GE (Peng et al., CVPR 2022).
  The modulation is a training-time rule on the gradients, not a layer: the model only carries
  ``modulation = "ogm_ge"``; the training loop, after ``loss.backward()`` and before
  ``optimizer.step()``, does::

      logits, feats = model.forward_features(audio, visual)
      ...                                    # loss = CE(logits, target); loss.backward()
      k = ogm_ge_coefficients(*model.unimodal_logits(feats), target, alpha=alpha)
      ogm_ge_modulate_(model, k)             # within the epochs where modulation is on

  (official defaults: modulation from epoch 0 to 50, alpha set per dataset on the command line).

Features: every encoder feature prefixed by its modality (``audio.layer1``, ...,
``visual.pooled``), then ``pooled`` (the fused classifier input).  Blocks: the encoders' blocks
aligned from the top and paired level by level (an ``nn.ModuleList`` holding both encoders'
blocks of that depth, so "the top k layers" takes the same depth of both), then the FiLM layer if
any, then the classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cmkd.models.base import Backbone, check_option
from cmkd.models.registry import build, register

FUSIONS = ("concat", "film")
DEFAULT_ENCODERS = ("resnet18", "resnet18")
DEFAULT_ENCODER_OPTIONS = ({"in_channels": 1}, {})


class LateFusion(Backbone):
    """Two unimodal encoders joined by a fusion module; see the module docstring.

    Parameters
    ----------
    classes : number of outputs.
    fusion : "concat" or "film".
    modalities : the two inputs' names, in the order :meth:`forward` takes them.
    encoders : registered model name of each modality's encoder.
    encoder_options : options of each encoder (``classes`` and ``modality`` are set here).
    modulation : None, or "ogm_ge" (a flag for the training loop; needs ``fusion="concat"``).
    """

    def __init__(self, classes: int, *, fusion: str = "concat",
                 modalities: Sequence[str] = ("audio", "visual"),
                 encoders: Sequence[str] = DEFAULT_ENCODERS,
                 encoder_options: Sequence[dict] = DEFAULT_ENCODER_OPTIONS,
                 modulation: str | None = None, name: str = "late fusion"):
        super().__init__()
        check_option(name, "classes", classes, low=1)
        check_option(name, "fusion", fusion, choices=FUSIONS)
        check_option(name, "modulation", modulation, choices=(None, "ogm_ge"))
        modalities, encoders = tuple(modalities), tuple(encoders)
        encoder_options = tuple(dict(o) for o in encoder_options)
        for option, value in (("modalities", modalities), ("encoders", encoders),
                              ("encoder_options", encoder_options)):
            if len(value) != 2:
                raise ValueError(f"model {name!r}: option {option!r} must have 2 items (one per "
                                 f"modality), got {len(value)}")
        if len(set(modalities)) != 2 or any("." in m for m in modalities):
            raise ValueError(f"model {name!r}: option 'modalities' must be two distinct names "
                             f"without '.', got {modalities}")
        if modulation == "ogm_ge" and fusion != "concat":
            raise ValueError(f"model {name!r}: OGM-GE modulation needs fusion='concat' (its "
                             f"unimodal logits split the concatenation's classifier)")
        self.fusion, self.modulation = fusion, modulation
        self.encoders = nn.ModuleDict()
        for m, enc_name, opts in zip(modalities, encoders, encoder_options):
            for fixed in ("classes", "modality"):
                if fixed in opts:
                    raise ValueError(f"model {name!r}: encoder_options must not set {fixed!r} "
                                     f"(set by the fusion model), got {opts}")
            enc = build(enc_name, classes=classes, modality=m, **opts)
            if not isinstance(enc, Backbone) or len(enc.modalities) != 1:
                raise ValueError(f"model {name!r}: encoder {enc_name!r} must be a unimodal "
                                 f"registered model")
            enc.classifier = nn.Identity()
            self.encoders[m] = enc
        self.classes, self.modalities = classes, modalities
        da, db = (self.encoders[m].feature_shapes["pooled"][0] for m in modalities)
        self.dims = (da, db)
        self.feature_shapes = {f"{m}.{k}": s for m in modalities
                               for k, s in self.encoders[m].feature_shapes.items()}
        if fusion == "concat":
            self.film = None
            self.classifier = nn.Linear(da + db, classes)
            self.feature_shapes["pooled"] = (da + db,)
        else:
            self.film = nn.Linear(da, 2 * db)
            self.classifier = nn.Linear(db, classes)
            self.feature_shapes["pooled"] = (db,)

    def features(self, *inputs: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        self._check_count(inputs)
        feats = OrderedDict()
        pooled = []
        for m, x in zip(self.modalities, inputs):
            enc_feats = self.encoders[m].features(x)
            feats.update((f"{m}.{k}", v) for k, v in enc_feats.items())
            pooled.append(enc_feats["pooled"])
        a, b = pooled
        if self.film is None:
            feats["pooled"] = torch.cat([a, b], 1)
        else:
            gamma, beta = self.film(a).split(self.dims[1], 1)
            feats["pooled"] = gamma * b + beta
        return feats

    def unimodal_logits(self, features: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's share of the concatenation classifier, as OGM-GE's official code
        computes it: ``a @ W[:, :dim_a].T + bias / 2`` and ``b @ W[:, dim_a:].T + bias / 2``
        (the two sum to the fused logits).

        Parameters
        ----------
        features : the dict of :meth:`forward_features` (reads ``<modality>.pooled``).

        Returns
        -------
        (logits_a, logits_b) : each (batch, classes), in the order of ``modalities``.
        """
        if self.film is not None:
            raise ValueError("unimodal_logits needs fusion='concat': a FiLM classifier does not "
                             "split into one part per modality")
        da = self.dims[0]
        w, bias = self.classifier.weight, self.classifier.bias
        a, b = (features[f"{m}.pooled"] for m in self.modalities)
        return F.linear(a, w[:, :da], bias / 2), F.linear(b, w[:, da:], bias / 2)

    def blocks(self) -> list[nn.Module]:
        per_encoder = [self.encoders[m].blocks()[:-1] for m in self.modalities]
        depth = max(len(b) for b in per_encoder)
        out: list[nn.Module] = []
        for j in range(depth, 0, -1):
            level = [b[-j] for b in per_encoder if len(b) >= j]
            out.append(level[0] if len(level) == 1 else nn.ModuleList(level))
        if self.film is not None:
            out.append(self.film)
        return [*out, self.classifier]


def ogm_ge_coefficients(logits_a: torch.Tensor, logits_b: torch.Tensor, target: torch.Tensor,
                        *, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OGM's modulation coefficients (Peng et al., CVPR 2022, Eq. 10) for one batch.

    s_u = sum over the batch of softmax(logits_u)[target] (the official code's score),
    rho_a = s_a / s_b, rho_b = s_b / s_a, and k_u = 1 - tanh(alpha * rho_u) when rho_u > 1, else
    1: only the dominant modality's gradient is damped.  (The official code tests rho_visual > 1
    and otherwise damps audio, so at exactly equal scores it damps audio where Eq. 10 damps
    neither; that tie is the only difference.)

    Parameters
    ----------
    logits_a, logits_b : (batch, classes) unimodal logits (:meth:`LateFusion.unimodal_logits`).
    target : (batch,) int64 labels.
    alpha : the modulation strength (> 0).

    Returns
    -------
    (k_a, k_b) : 0-d tensors (no gradient, no host synchronisation).
    """
    if logits_a.dim() != 2 or logits_a.shape != logits_b.shape:
        raise ValueError(f"logits_a and logits_b must be (batch, classes) of the same shape, got "
                         f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}")
    if target.shape != logits_a.shape[:1]:
        raise ValueError(f"target must be (batch,) = ({logits_a.shape[0]},), got "
                         f"{tuple(target.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    with torch.no_grad():
        idx = target[:, None]
        s_a = logits_a.float().softmax(1).gather(1, idx).sum()
        s_b = logits_b.float().softmax(1).gather(1, idx).sum()
        one = torch.ones_like(s_a)
        rho_a, rho_b = s_a / s_b, s_b / s_a
        k_a = torch.where(rho_a > 1, 1 - torch.tanh(alpha * rho_a), one)
        k_b = torch.where(rho_b > 1, 1 - torch.tanh(alpha * rho_b), one)
    return k_a, k_b


def ogm_ge_modulate_(model: LateFusion, coefficients: Sequence[torch.Tensor | float], *,
                     ge: bool = True, generator: torch.Generator | None = None) -> None:
    """Apply OGM(-GE) in place to the gradients of each encoder's convolution kernels.

    For every encoder parameter with a gradient of 3 or more dimensions (conv kernels; the
    official code's test is ``grad.dim() == 4`` for its 2D encoders; BatchNorm, linear layers
    and the fusion classifier are left alone): ``grad <- k_u * grad`` (OGM), plus, when ``ge``,
    Gaussian noise of the original gradient's standard deviation (+1e-8) (GE, generalisation
    enhancement, added to both modalities as the official code does).

    Parameters
    ----------
    model : a :class:`LateFusion` whose gradients were just computed.
    coefficients : (k_a, k_b) from :func:`ogm_ge_coefficients`, in the order of ``modalities``.
    ge : add the Gaussian noise (OGM-GE) or not (OGM).
    generator : random generator for the noise (on the gradients' device).
    """
    if not isinstance(model, LateFusion):
        raise TypeError(f"model must be a LateFusion network, got {type(model).__name__}")
    if len(coefficients) != 2:
        raise ValueError(f"coefficients must be (k_a, k_b), got {len(coefficients)} values")
    with torch.no_grad():
        for m, k in zip(model.modalities, coefficients):
            for p in model.encoders[m].parameters():
                g = p.grad
                if g is None or g.dim() < 3:
                    continue
                new = g * k
                if ge:
                    noise = torch.randn(g.shape, generator=generator, device=g.device,
                                        dtype=g.dtype)
                    new = new + noise * (g.std() + 1e-8)
                p.grad = new


def _fusion(fusion: str, modulation: str | None, name: str):
    def factory(classes: int, *, modalities: Sequence[str] = ("audio", "visual"),
                encoders: Sequence[str] = DEFAULT_ENCODERS,
                encoder_options: Sequence[dict] = DEFAULT_ENCODER_OPTIONS) -> LateFusion:
        return LateFusion(classes, fusion=fusion, modalities=modalities, encoders=encoders,
                          encoder_options=encoder_options, modulation=modulation, name=name)

    factory.__name__ = name
    factory.__doc__ = f"Late fusion by {fusion}" + (" trained with OGM-GE" if modulation else "") \
        + "; see :class:`LateFusion`."
    return register(name)(factory)


fusion_concat = _fusion("concat", None, "fusion_concat")
fusion_film = _fusion("film", None, "fusion_film")
fusion_ogm_ge = _fusion("concat", "ogm_ge", "fusion_ogm_ge")
