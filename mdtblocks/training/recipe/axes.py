"""The training axes a recipe's flags choose: the objective (``--objective``), the token rule (``--tokens``) and its
ratios (``--mask-ratio``, ``--mask-ratio-range``), token routing (``--route``, ``--route-span``) and a start from other
weights (``--init-from``).

Every recipe builds its criterion here (:func:`recipe_criterion`), so the flags mean the
same in each; the criterion's record in ``config.json`` says what trained the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from ...criterion import Criterion, LabelDropout, rule_of_model
from ...masking import Route, default_span
from ...objectives import GaussianObjective
from ...objectives.base import Objective
from ...tokens import MaskDiTDropRule, PlainRule, RoutedRule, TokenRule, check_rule_model
from ...tokens.legacy import MASKDIT_MAE_WEIGHT

__all__ = [
    "RECIPE_OBJECTIVES", "objective_names", "recipe_objective", "recipe_route", "recipe_tokens", "recipe_criterion",
    "axes_problems", "learns_sigma", "grid_sampler", "load_init_weights", "RULE_RATIOS", "RECIPE_TOKENS",
]

RULE_RATIOS = ("mask_ratio", "mask_ratio_range")
"""The recipe flags that set the token rule's ratios (``--mask-ratio``, ``--mask-ratio-range``)."""

DROP_RATIO = 0.5
"""``--tokens maskdit_drop``'s share of dropped tokens on a backbone whose preset records none (MaskDiT's published 50%)."""

RECIPE_TOKENS: dict[str, Callable[[], TokenRule] | None] = {
    "preset": None,  # the rule the model's preset records
    "plain": PlainRule,
    "maskdit_drop": lambda: MaskDiTDropRule(DROP_RATIO, mae_weight=MASKDIT_MAE_WEIGHT),
}
"""``--tokens`` name -> the rule it builds when the preset records another one (``None``: the preset's own)."""


def _gaussian(cfg: Any, model: nn.Module) -> Objective:
    return GaussianObjective("linear", 1000, learn_sigma=bool(model.config.learn_sigma), snr_gamma=cfg.snr_gamma)


def _with_options(cfg: Any, model: nn.Module) -> Objective:
    from .objective import build_objective  # the --flow-*/--edm-* options (objective.py imports the flags' module)

    return build_objective(cfg)


RECIPE_OBJECTIVES: dict[str, Callable[[Any, nn.Module], Objective]] = {
    "gaussian": _gaussian, "flow": _with_options, "edm": _with_options,
}
"""``--objective`` name -> ``(recipe config, model) -> objective`` (another objective adds one entry)."""


def objective_names() -> tuple[str, ...]:
    """The ``--objective`` choices."""
    return tuple(RECIPE_OBJECTIVES)


def recipe_objective(cfg: Any, model: nn.Module) -> Objective:
    """The objective ``--objective`` names, with its flags' options."""
    if cfg.objective not in RECIPE_OBJECTIVES:
        raise ValueError(f"--objective {cfg.objective!r} is not one of {objective_names()}")
    return RECIPE_OBJECTIVES[cfg.objective](cfg, model)


def learns_sigma(cfg: Any, model_class: str) -> bool:
    """Whether the recipe's model predicts the variance too: the Gaussian diffusion's learned sigma (every model,
    MaskDiT included: with dropping its vb term covers the visible patches), and flow matching's backbones as SiT
    keeps them (the flow objective drops those channels; not MaskDiT's); never with EDM."""
    return cfg.objective == "gaussian" or (cfg.objective == "flow" and model_class != "MaskDiT")


def recipe_route(cfg: Any, model: nn.Module) -> Route | None:
    """``--route RATIO`` over ``--route-span START END`` (default: :func:`~mdtblocks.masking.default_span` of the model)."""
    if cfg.route is None:
        return None
    if cfg.route_span is not None:
        start, end = cfg.route_span
    elif hasattr(model, "decoder_blocks"):  # MaskDiT: spans in its encoder
        start, end = default_span(len(model.blocks))
    else:
        encoder = getattr(model, "encoder", None)
        start, end = default_span(len(model.trunk()), None if encoder is None else len(encoder))
    return Route(int(start), int(end), float(cfg.route))


def recipe_tokens(cfg: Any, model: nn.Module) -> TokenRule:
    """The token rule, which owns the run's mask ratios, routed with ``--route``.

    ``--tokens preset`` (the default) takes the rule of the model's preset
    (:func:`~mdtblocks.criterion.rule_of_model`: MaskDiT's dropping, MDT's two passes with
    ``--masked-draws``, DiT's plain step); ``plain`` one pass over every token (MDT without
    its masked pass, MaskDiT unmasked); ``maskdit_drop`` MaskDiT's dropping of half the
    tokens with its MAE term (on an MDT backbone, whose side-interpolater fills the dropped
    positions). ``--mask-ratio`` and ``--mask-ratio-range`` replace the rule's ratios where
    given. The flags do not change the model, whose config keeps the preset's published
    ratios as their legacy record.

    Raises:
        ValueError: an unknown ``--tokens``, a ratio flag the rule has no ratio for, or ratios the rule refuses.
    """
    tokens = rule_of_model(model, cfg.masked_draws)
    choice = getattr(cfg, "tokens", "preset")
    if choice not in RECIPE_TOKENS:
        raise ValueError(f"--tokens {choice!r} is not one of {tuple(RECIPE_TOKENS)}")
    build = RECIPE_TOKENS[choice]
    if build is not None and tokens.kind != choice:
        tokens = build()
    ratios = {n: getattr(cfg, n, None) for n in RULE_RATIOS if getattr(cfg, n, None) is not None}
    if ratios:
        known = {f.name for f in dataclasses.fields(tokens)} if dataclasses.is_dataclass(tokens) else set()
        stray = sorted(set(ratios) - known)
        if stray:
            raise ValueError(
                f"{', '.join('--' + n.replace('_', '-') for n in stray)} does not apply to the "
                f"{tokens.kind!r} token rule of {type(model).__name__}"
            )
        tokens = dataclasses.replace(tokens, **{n: float(v) for n, v in ratios.items()})  # type: ignore[type-var]
    route = recipe_route(cfg, model)
    return tokens if route is None else RoutedRule(tokens, route)


def recipe_criterion(cfg: Any, model: nn.Module) -> Criterion:
    """The run's criterion from the flags; a combination that cannot train ``model`` raises ``ValueError``."""
    criterion = Criterion(recipe_objective(cfg, model), recipe_tokens(cfg, model), LabelDropout.of_model(model))
    check_rule_model(criterion.tokens, model)
    return criterion


def axes_problems(cfg: Any, model_class: str) -> list[str]:
    """What is wrong with the flags of these axes, before anything is built (one message each)."""
    problems = []
    if cfg.route is not None and not 0.0 < cfg.route < 1.0:
        problems.append(f"--route {cfg.route} is outside (0, 1): it is the share of tokens that skip the span")
    if cfg.route_span is not None and (cfg.route is None or len(cfg.route_span) != 2):
        problems.append(f"--route-span takes START END with --route RATIO, got {' '.join(map(str, cfg.route_span))}"
                        + ("" if cfg.route is not None else " without --route"))
    return problems


def grid_sampler(criterion: Criterion, steps: int) -> tuple[str, int]:
    """``(sampler, steps)`` of the sample grids: DDIM for the Gaussian diffusion, else the objective's first sampler."""
    samplers = tuple(getattr(criterion.objective, "samplers", ()))
    for deterministic in ("ddim", "euler"):  # Gaussian: DDIM; flow: the Euler ODE
        if deterministic in samplers:
            return deterministic, steps
    return (samplers[0] if samplers else "ddim"), steps


def load_init_weights(model: nn.Module, source: str | Path) -> Path:
    """Load ``source``'s EMA weights into ``model`` (strict): a checkpoint folder, or a run folder's newest checkpoint.

    Returns:
        The file read.

    Raises:
        FileNotFoundError: no ``ema.safetensors`` there.
        ValueError: weights of another model.
    """
    from ..checkpoint import latest_checkpoint

    folder = Path(source)
    if not (folder / "ema.safetensors").is_file() and (folder / "checkpoints").is_dir():
        folder = latest_checkpoint(folder) or folder
    path = folder / "ema.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {source}: no ema.safetensors there (give a checkpoint folder or a run folder)")
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"--init-from {source}: the weights do not fit the model ({str(err).splitlines()[0]})") from None
    return path
