"""The learning-speed study's arms: one row per way of training (backbone x objective x token rule x extra losses).

An :class:`Arm` names the budget-matched backbone family, the changes to its config, and
functions that build the criterion's parts for a built model. The study builds every arm
through :class:`~mdtblocks.criterion.Criterion` directly, so adding a way of training is
one :func:`register_arm` call::

    register_arm(Arm(
        "SiT-logit", "DiT", objective=lambda opts: FlowMatching(time_sampler="logit_normal"),
        about="DiT + flow matching with logit-normal times",
    ))

An arm whose parts are not in the library yet carries ``unavailable``: it is listed, and
picking it is refused with that message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from torch import nn

from ..criterion import Criterion
from ..criterion.labels import LabelDropout
from ..criterion.masked import rule_of_model
from ..masking import Route, default_span
from ..objectives.base import Objective
from ..objectives.edm import EDMObjective
from ..objectives.flow import FlowMatching
from ..objectives.gaussian import GaussianObjective
from ..tokens import MaskDiTDropRule, MaskedTwoPassRule, PlainRule, RoutedRule

__all__ = [
    "ARMS", "NFE_SAMPLERS", "Arm", "alignment", "alignment_head_flops", "arm", "build_arm_criterion",
    "inception_resolution", "register_arm", "sampler_at_nfe", "model_rule", "two_pass", "plain", "routed",
    "maskdit_drop", "MASKDIT_DROP_RATIO",
]

BACKBONES = ("DiT", "MDT", "MDTv2", "MaskDiT")


def gaussian(options: Mapping[str, Any]) -> Objective:
    """The study's Gaussian diffusion: linear schedule, 1000 steps, learned sigma, its min-SNR gamma."""
    return GaussianObjective("linear", 1000, learn_sigma=True, snr_gamma=options.get("snr_gamma"))


def flow(options: Mapping[str, Any]) -> Objective:
    """SiT's flow matching: the linear path, velocity prediction, uniform times."""
    return FlowMatching()


def edm(options: Mapping[str, Any]) -> Objective:
    """EDM's objective with its default noise distribution and ``sigma_data`` (MaskDiT's)."""
    return EDMObjective()


def model_rule(model: nn.Module, options: Mapping[str, Any]) -> Any:
    """The token rule the model's config records (its preset's published ratios; DiT: plain; MDT: its two passes,
    the study's masked draws): the default of an arm that names no rule."""
    return rule_of_model(model, options.get("masked_draws", "independent"))


def routed(
    ratio: float, rule: Callable[[nn.Module, Mapping[str, Any]], Any] | None = None
) -> Callable[[nn.Module, Mapping[str, Any]], Any]:
    """``(model, options) -> rule``: ``rule`` (default: the model's) with TREAD routing of ``ratio`` over the default span.

    The span is :func:`~mdtblocks.masking.default_span`; a stack too short for it (``--quick``'s
    4 blocks) routes around every block but the first and the last.
    """

    def tokens(model: nn.Module, options: Mapping[str, Any]) -> Any:
        encoder = getattr(model, "encoder", None)
        blocks = len(model.trunk()) if encoder is None else len(encoder)
        try:
            start, end = default_span(len(model.trunk()), None if encoder is None else len(encoder))
        except ValueError:
            if blocks < 3:
                raise
            start, end = 1, blocks - 1
        inner = (rule or model_rule)(model, options)
        return RoutedRule(inner, Route(int(start), int(end), float(ratio)))

    return tokens


def two_pass(ratio: float, width: float = 0.0) -> Callable[[nn.Module, Mapping[str, Any]], Any]:
    """``(model, options) -> rule``: MDT's two passes at mask ratio ``ratio + U(0, width)``, the study's masked draws."""
    MaskedTwoPassRule(ratio, width)  # checks the ratios when the arm is defined

    def tokens(model: nn.Module, options: Mapping[str, Any]) -> Any:
        return MaskedTwoPassRule(ratio, width, masked_draws=options.get("masked_draws", "independent"))

    return tokens


def plain(model: nn.Module, options: Mapping[str, Any]) -> Any:
    """DiT's plain step: every token, one pass (on an MDT network: no masked pass)."""
    return PlainRule()


MASKDIT_DROP_RATIO = 0.5
"""The MaskDiT arm's share of dropped tokens (the official pre-training's)."""


def maskdit_drop(model: nn.Module, options: Mapping[str, Any]) -> Any:
    """MaskDiT's dropping of :data:`MASKDIT_DROP_RATIO` of the tokens, MAE weight 0.1 (its pre-training)."""
    return MaskDiTDropRule(MASKDIT_DROP_RATIO, mae_weight=0.1)


def maskdit_unmasked(model: nn.Module, options: Mapping[str, Any]) -> Any:
    """MaskDiT's unmasked fine-tune: nothing dropped, no MAE term (the plain EDM step on the same network)."""
    return MaskDiTDropRule(0.0, mae_weight=0.0)


def inception_resolution(grid: int) -> int:
    """The smallest input side at which the FID Inception's ``mixed_6`` map is ``grid`` x ``grid`` or finer.

    Follows the network's unpadded strided stages (299 px gives 17 x 17): ``16 * grid + 27``.
    The study's 16 px digits at patch 2 (an 8 x 8 grid) need 155 px, a quarter of 299's cost.
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    return 16 * grid + 27


@lru_cache(maxsize=4)
def _inception(resolution: int) -> nn.Module:
    from ..alignment import InceptionEncoder  # here: mdtblocks.alignment imports this package

    return InceptionEncoder(resolution=resolution)  # loaded once per resolution: every run of a study shares it


def alignment(kind: str) -> Callable[[nn.Module, Mapping[str, Any]], Sequence[Any]]:
    """``(model, options) -> (AlignmentLoss,)``: REPA or Dispersive on the plain pass, attached to ``model``.

    Depth: REPA's block 8 of 28 scaled to the model's trunk. REPA: coefficient 0.5, the
    offline FID Inception at :func:`inception_resolution` of the token grid (its 17 x 17-or-finer
    map averaged down to the grid), projector width twice the model's (REPA's 2048 on a
    1152-wide model is about 1.8 times; 2048 here would outweigh the network). Dispersive:
    coefficient 0.25, no encoder. ``options["align_encoder"]`` may give another frozen encoder (tests).

    Raises:
        ValueError: ``kind`` is not ``"repa"`` or ``"dispersive"``.
    """
    if kind not in ("repa", "dispersive"):
        raise ValueError(f"alignment kind must be 'repa' or 'dispersive', got {kind!r}")

    def extra(model: nn.Module, options: Mapping[str, Any]) -> Sequence[Any]:
        from ..alignment import AlignmentLoss  # here: mdtblocks.alignment imports this package
        from ..training.recipe.align import default_align_depth

        depth = default_align_depth(len(model.trunk()))
        if kind == "dispersive":
            return (AlignmentLoss("dispersive", depth, 0.25).attach(model),)
        encoder = options.get("align_encoder")
        if encoder is None:
            grid = tuple(model.config.grid)
            encoder = _inception(inception_resolution(int(max(grid))))
        encoder = encoder.to(next(model.parameters()).device)
        loss = AlignmentLoss("repa", depth, 0.5, encoder=encoder.record(), target_dim=encoder.feature_dim,
                             projector_dim=2 * int(model.config.hidden_size))
        return (loss.attach(model, encoder),)

    return extra


def alignment_head_flops(model: nn.Module, options: Mapping[str, Any]) -> float:
    """Forward multiply-adds per image of the model's ``alignment_head`` (REPA's projector) over every token.

    The frozen encoder runs without a backward and can be cached with the data, so it is
    not counted (as a latent cache's autoencoder is not).
    """
    from ..alignment.extra import ALIGN_MODULE

    head = getattr(model, ALIGN_MODULE, None)
    if head is None:
        return 0.0
    per_token = sum(m.weight.numel() for m in head.modules() if isinstance(m, nn.Linear))
    return float(per_token * model.num_tokens)


@dataclass(frozen=True)
class Arm:
    """One way of training, as a row of the study.

    Attributes:
        name: the arm's name (``--arms``).
        backbone: the budget-matched family: ``"DiT"`` (one block more than MDT's encoder
            and decoder, for its side-interpolater), ``"MDT"``, ``"MDTv2"`` or ``"MaskDiT"``.
        objective: ``options -> Objective`` (options: the study's settings, e.g. ``snr_gamma``).
        tokens: ``(model, options) -> TokenRule``, which owns the arm's mask ratios (:func:`two_pass`,
            :func:`plain`, :func:`maskdit_drop`, :func:`routed`); default: the rule the model's
            config records (its preset's published ratios, :func:`~mdtblocks.tokens.rule_of_config`).
        extra_losses: ``(model, options) -> extra losses`` of the criterion; default: none.
        model_changes: config fields changed from the family's (``{"decoder_depth": 1}``); the
            token choice is ``tokens``'s, not the config's.
        extra_forward_flops: ``(model, options) -> forward multiply-adds per image`` of the
            extra losses' heads, for the FLOPs axis; default: none.
        finetune_fraction: share of the steps spent in a final fine-tune with ``finetune_tokens``
            (counted in the budget; the study starts it at :meth:`finetune_start`).
        finetune_tokens: ``(model, options) -> TokenRule`` of the fine-tune; needed when
            ``finetune_fraction`` is above 0.
        about: one line for the docs and ``--help``.
        unavailable: why the arm cannot run in this version (``None``: it can).
    """

    name: str
    backbone: str
    objective: Callable[[Mapping[str, Any]], Objective] = gaussian
    tokens: Callable[[nn.Module, Mapping[str, Any]], Any] = model_rule
    extra_losses: Callable[[nn.Module, Mapping[str, Any]], Sequence[Any]] = lambda model, options: ()
    model_changes: Mapping[str, Any] = field(default_factory=dict)
    extra_forward_flops: Callable[[nn.Module, Mapping[str, Any]], float] = lambda model, options: 0.0
    finetune_fraction: float = 0.0
    finetune_tokens: Callable[[nn.Module, Mapping[str, Any]], Any] | None = None
    about: str = ""
    unavailable: str | None = None

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"arm {self.name!r}: backbone {self.backbone!r} is not one of {BACKBONES}")
        if not 0.0 <= self.finetune_fraction < 1.0:
            raise ValueError(f"arm {self.name!r}: finetune_fraction must lie in [0, 1), got {self.finetune_fraction}")
        if self.finetune_fraction > 0 and self.finetune_tokens is None:
            raise ValueError(f"arm {self.name!r}: a finetune_fraction of {self.finetune_fraction} needs finetune_tokens")

    def finetune_start(self, steps: int) -> int | None:
        """The step after which a run of ``steps`` fine-tunes (``None``: no fine-tune, or under one step of it)."""
        if self.finetune_fraction == 0:
            return None
        start = round(steps * (1.0 - self.finetune_fraction))
        return start if 0 < start < steps else None


ARMS: dict[str, Arm] = {}
"""Every registered arm by name, in registration order."""


def register_arm(new: Arm) -> Arm:
    """Add ``new`` to :data:`ARMS` (a name already taken is refused)."""
    if not isinstance(new, Arm):
        raise TypeError(f"register_arm needs an Arm, got {type(new).__name__}")
    if new.name in ARMS:
        raise ValueError(f"an arm named {new.name!r} is already registered")
    ARMS[new.name] = new
    return new


def arm(name: str) -> Arm:
    """The registered arm ``name``; unknown and unavailable arms are refused with a message naming them."""
    if name not in ARMS:
        raise ValueError(f"unknown arm {name!r}; expected one of {tuple(ARMS)}")
    found = ARMS[name]
    if found.unavailable:
        raise ValueError(f"arm {name!r} is not available yet: {found.unavailable}")
    return found


def build_arm_criterion(row: Arm, model: nn.Module, options: Mapping[str, Any], finetune: bool = False) -> Criterion:
    """The arm's :class:`~mdtblocks.criterion.Criterion` for a built ``model`` (label dropout: the model's).

    ``finetune``: the criterion of the arm's final fine-tune (its ``finetune_tokens``).
    """
    if finetune and row.finetune_tokens is None:
        raise ValueError(f"arm {row.name!r} has no fine-tune")
    tokens = row.finetune_tokens if finetune else row.tokens
    return Criterion(
        row.objective(options), tokens(model, options), LabelDropout.of_model(model),
        tuple(row.extra_losses(model, options)),
    )


NFE_SAMPLERS: dict[str, tuple[str, Callable[[int], int]]] = {
    "gaussian": ("ddim", lambda nfe: nfe),
    "flow": ("euler", lambda nfe: nfe),
    "edm": ("heun", lambda nfe: max(2, (nfe + 1) // 2)),  # Karras' schedule needs 2 steps at least
}
"""Objective kind -> (sampler, network evaluations per image -> its ``num_steps``)."""


def sampler_at_nfe(objective: Objective, nfe: int, gaussian_sampler: str = "ddim") -> tuple[str, int]:
    """The sampler and step count that draw an image with ``nfe`` network evaluations (guidance aside).

    Gaussian objectives use ``gaussian_sampler`` (DDIM, DDPM and DPM-Solver++ all evaluate
    once per step); flow matching Euler; EDM Heun (two evaluations per step but the last; at
    least 2 steps, so below 3 evaluations EDM gets 3).
    """
    kind = getattr(objective, "kind", None)
    if kind not in NFE_SAMPLERS:
        raise ValueError(f"no fixed-evaluation sampler for objective kind {kind!r}; expected one of {tuple(NFE_SAMPLERS)}")
    name, steps = NFE_SAMPLERS[kind]
    return (gaussian_sampler if kind == "gaussian" else name), steps(nfe)


for _row in (
    Arm("DiT", "DiT", tokens=plain, about="DiT under the Gaussian diffusion (the baseline)"),
    Arm("MDTv2", "MDTv2", tokens=two_pass(0.3, 0.2),
        about="MDTv2 (mask ratio 0.3 + U(0, 0.2)) under the Gaussian diffusion"),
    Arm("MDTv2-nomask", "MDTv2", tokens=plain,
        about="the MDTv2 network without its masked pass: masking's own effect"),
    Arm("MDT", "MDT", tokens=two_pass(0.3), about="MDT v1 (fixed mask ratio 0.3) under the Gaussian diffusion"),
    Arm("SiT", "DiT", objective=flow, tokens=plain, about="DiT + flow matching (SiT: linear path, velocity, Euler)"),
    Arm("MDTv2-flow", "MDTv2", objective=flow, tokens=two_pass(0.3, 0.2), about="MDTv2 + flow matching"),
    Arm("SiT-TREAD", "DiT", objective=flow, tokens=routed(0.5, plain),
        about="DiT + flow + TREAD routing: half the tokens skip the default span of blocks"),
    # MaskDiT's decoder: one block of the study's width and heads (the study sets them), so that
    # encoder + decoder have the DiT arm's block count and the budget stays within 10%.
    # Its unmasked fine-tune takes the last 5% of the steps (official: 100k after 2M steps).
    Arm("MaskDiT", "MaskDiT", objective=edm, tokens=maskdit_drop, model_changes={"decoder_depth": 1},
        finetune_fraction=0.05, finetune_tokens=maskdit_unmasked,
        about="MaskDiT + EDM, half the tokens dropped, a one-block decoder of the study's width; the last 5% of "
              "the steps are its unmasked fine-tune"),
    # Alignment: the projector (REPA's head) trains with the backbone but is dropped from the
    # exported weights, so it is outside the parameter budget; its FLOPs are on the FLOPs axis.
    Arm("SiT-REPA", "DiT", objective=flow, tokens=plain, extra_losses=alignment("repa"), extra_forward_flops=alignment_head_flops,
        about="DiT + flow + REPA (offline FID Inception encoder; projector outside the parameter budget, "
              "its FLOPs counted)"),
    Arm("MDTv2-flow-REPA", "MDTv2", objective=flow, tokens=two_pass(0.3, 0.2), extra_losses=alignment("repa"),
        extra_forward_flops=alignment_head_flops,
        about="MDTv2 + flow + REPA on the plain pass (offline FID Inception encoder; projector outside the "
              "parameter budget, its FLOPs counted)"),
    Arm("SiT-dispersive", "DiT", objective=flow, tokens=plain, extra_losses=alignment("dispersive"),
        about="DiT + flow + the dispersive loss (weight-free alignment: no parameters, no head FLOPs)"),
):
    register_arm(_row)
