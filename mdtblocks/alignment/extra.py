"""Alignment as an extra loss of the training criterion: which pass, which tokens, which targets.

:class:`AlignmentLoss` is what :class:`~mdtblocks.criterion.Criterion` adds to the
objective's loss. The criterion lets it watch every pass of a step (:meth:`AlignmentLoss.watch`):
on the passes it aligns, a :class:`~mdtblocks.alignment.FeatureTap` records the tokens of
block ``depth``, and after the passes it turns them into one per-sample term. REPA's
projector is a submodule of the backbone under :data:`ALIGN_MODULE`, so the optimizer,
the EMA and the training checkpoint carry it like any weight (resume is bit-identical),
while :meth:`~mdtblocks.models.base.DiffusionBackbone.from_pretrained` and the exported
pipelines drop it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..criterion.draws import StepRandomness
from ..criterion.record import register_extra_loss
from ..tokens.rules import TokenPass
from ..typing import Image, Labels
from .dispersive import DispersiveLoss
from .encoder import FrozenEncoder, resample_to_grid
from .repa import RepaLoss
from .tap import FeatureTap

__all__ = ["AlignmentLoss", "ALIGN_MODULE", "ALIGN_PASSES", "alignment_from_record"]

ALIGN_MODULE = "alignment_head"
"""Name of the trained alignment head (REPA's projector) inside the backbone; dropped from exported weights."""

ALIGN_PASSES: dict[str, tuple[str, ...]] = {"plain": ("unmasked",), "masked": ("masked",), "both": ("unmasked", "masked")}
"""``--align-pass`` -> the token passes aligned (``"plain"`` is the pass over all tokens, ``"unmasked"``)."""


@dataclass
class AlignmentLoss:
    """REPA or Dispersive on block ``depth``, as a :class:`~mdtblocks.criterion.ExtraLoss`.

    Build it from options (or :func:`alignment_from_record`), then :meth:`attach` it to the
    backbone before training. Per step, for each aligned pass, the loss takes the tokens
    of block ``depth`` of that pass: all ``n`` on the plain pass; on MDT's masked pass the
    ``k`` kept ones in ``ids_keep`` order for an encoder block (REPA's targets are then
    gathered with ``ids_keep``; masked tokens get no term), all ``n`` for a decoder block.
    With ``pass_choice="both"`` the two passes' terms are averaged.

    Attributes:
        kind: ``"repa"`` (needs targets) or ``"dispersive"`` (needs none).
        depth: 1-based block whose output is aligned.
        coeff: weight of the term (REPA: 0.5; Dispersive: 0.25).
        pass_choice: ``"plain"``, ``"masked"`` or ``"both"`` (MDT, MDTv2; DiT has only ``"plain"``).
        encoder: the frozen encoder's ``record()`` the targets come from (REPA only).
        target_dim: the encoder's feature width (REPA only).
        projector_dim: hidden width of REPA's projector (2048).
        projector_layers: linear layers of REPA's projector (3).
        temperature: Dispersive's temperature.
    """

    kind: Literal["repa", "dispersive"]
    depth: int
    coeff: float = 0.5
    pass_choice: Literal["plain", "masked", "both"] = "plain"
    encoder: dict[str, Any] | None = None
    target_dim: int | None = None
    projector_dim: int = 2048
    projector_layers: int = 3
    temperature: float = 1.0

    weight = 1.0  # the coefficient is applied inside the term (REPA's and Dispersive's convention)

    def __post_init__(self) -> None:
        if self.kind not in ("repa", "dispersive"):
            raise ValueError(f"alignment kind must be 'repa' or 'dispersive', got {self.kind!r}")
        if self.pass_choice not in ALIGN_PASSES:
            raise ValueError(f"align pass must be one of {sorted(ALIGN_PASSES)}, got {self.pass_choice!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"align depth must be a positive integer, got {self.depth!r}")
        if self.kind == "repa" and (self.encoder is None or not self.target_dim):
            raise ValueError("REPA needs an encoder record and its feature width (target_dim)")
        self._model: nn.Module | None = None
        self._frozen: FrozenEncoder | None = None
        self._tokens: dict[str, tuple[Tensor, Tensor | None]] = {}
        self._dispersive = DispersiveLoss(self.coeff, self.temperature) if self.kind == "dispersive" else None

    @property
    def name(self) -> str:
        """Logged as ``loss_<name>``: the kind (``repa``, ``dispersive``)."""
        return self.kind

    @property
    def passes(self) -> tuple[str, ...]:
        """The names of the aligned token passes."""
        return ALIGN_PASSES[self.pass_choice]

    # --- binding to a model -------------------------------------------------------------
    def attach(self, model: nn.Module, encoder: FrozenEncoder | None = None) -> AlignmentLoss:
        """Bind to the backbone: check the depth and passes, add REPA's projector as ``model.alignment_head``.

        Args:
            model: the backbone (unwrapped). A head already there (same shape) is kept.
            encoder: the frozen encoder to run on clean images when the batch carries no
                stored features; ``None`` when training from a cache with features.

        Raises:
            ValueError: ``depth`` past the network, or an encoder other than the recorded one.
                (Whether the token rule makes the aligned passes is checked by the
                :class:`~mdtblocks.criterion.Criterion` that holds this loss.)
        """
        total = len(model.trunk())
        if self.depth > total:
            raise ValueError(f"align depth {self.depth} is past the network's depth {total}")
        if encoder is not None and self.encoder is not None and encoder.record() != self.encoder:
            raise ValueError(f"the encoder {encoder.record()} is not the recorded {self.encoder}")
        if self.kind == "repa" and not hasattr(model, ALIGN_MODULE):
            head = RepaLoss(model.config.hidden_size, int(self.target_dim or 0), self.coeff, self.projector_dim,
                            self.projector_layers)
            model.add_module(ALIGN_MODULE, head.to(next(model.parameters()).device))
        self._model, self._frozen = model, encoder
        return self

    def _bound(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError("the alignment loss is not attached to a model: call attach(model) first")
        return self._model

    # --- targets ------------------------------------------------------------------------
    def targets(self, images: Tensor, stored: Tensor | None) -> Float[Tensor, "b n e"] | None:
        """REPA's targets on the token grid: stored feature maps (a cache), else the encoder on the clean images.

        Args:
            images: the clean batch as the dataset gives it (pixels; ignored when ``stored``).
            stored: ``(b, e, fh, fw)`` feature maps the batch carries, or ``None``.

        Returns:
            ``(b, n, e)`` float32, or ``None`` for Dispersive (no target).
        """
        if self.kind != "repa":
            return None
        model = self._bound()
        grid = tuple(model.config.grid)
        device = next(model.parameters()).device
        if stored is not None:
            if stored.ndim != 4 or stored.shape[1] != self.target_dim:
                raise ValueError(f"stored features have shape {tuple(stored.shape)}, expected (b, {self.target_dim}, fh, fw)")
            return resample_to_grid(stored.to(device).float(), grid, "the cached features")  # type: ignore[arg-type]
        if self._frozen is None:
            raise ValueError("REPA needs target features: train from a cache that stores them, or give an encoder")
        if next(iter(self._frozen.parameters()), images).device != images.device:
            self._frozen.to(images.device)  # once: the encoder runs where the batch is
        return self._frozen(images, grid).to(device)  # type: ignore[arg-type]

    # --- the criterion's calls ----------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, token_pass: TokenPass) -> Iterator[None]:
        """Around one pass of the criterion: tap block ``depth`` if this pass is aligned, keep its tokens."""
        if token_pass.name not in self.passes:
            yield
            return
        with FeatureTap(self._bound(), self.depth) as tap:
            yield
            self._tokens[token_pass.name] = (tap.pop(), tap.ids_for(token_pass.ids_keep))

    def __call__(
        self,
        net: Callable[..., Tensor],
        x_start: Image,
        y: Labels,
        draws: StepRandomness,
        terms: Mapping[str, Tensor],
        targets: Tensor | None = None,
    ) -> Float[Tensor, "b"]:
        """The per-sample term (already times ``coeff``), averaged over the aligned passes of this step."""
        taken, self._tokens = self._tokens, {}
        missing = [p for p in self.passes if p not in taken]
        if missing:
            raise ValueError(
                f"the {self.kind} alignment aligns the {missing} pass(es), which this step did not make "
                f"(passes made: {sorted(taken) or 'none watched'})"
            )
        values = []
        for name in self.passes:
            tokens, ids = taken[name]
            if self.kind == "repa":
                if targets is None:
                    raise ValueError("REPA needs target features for the batch (the criterion's targets=)")
                values.append(getattr(self._bound(), ALIGN_MODULE)(tokens, targets, ids))
            else:
                assert self._dispersive is not None
                values.append(self._dispersive(tokens))
        return values[0] if len(values) == 1 else torch.stack(values).mean(0)

    def to_record(self) -> dict[str, Any]:
        """Every option as JSON values, with ``"kind"``."""
        record: dict[str, Any] = {"kind": self.kind, "depth": self.depth, "coeff": self.coeff, "pass": self.pass_choice}
        if self.kind == "repa":
            record.update(encoder=self.encoder, target_dim=self.target_dim, projector_dim=self.projector_dim,
                          projector_layers=self.projector_layers)
        else:
            record["temperature"] = self.temperature
        return record


def alignment_from_record(record: Mapping[str, Any]) -> AlignmentLoss:
    """Rebuild an (unattached) :class:`AlignmentLoss` from :meth:`AlignmentLoss.to_record`."""
    options = {k: v for k, v in record.items() if k not in ("kind", "pass")}
    return AlignmentLoss(kind=record["kind"], pass_choice=record.get("pass", "plain"), **options)


register_extra_loss("repa", alignment_from_record)
register_extra_loss("dispersive", alignment_from_record)
