"""The recipes' ``--objective`` flag and its options: the objective a recipe config names, and what its samples use.

``--objective gaussian`` (the default) is ADM's Gaussian diffusion, exactly as every recipe
trained before the flag existed. ``--objective flow`` is flow matching
(:class:`~mdtblocks.objectives.flow.FlowMatching`) with the ``--flow-*`` options, and
``--objective edm`` is EDM (:class:`~mdtblocks.objectives.EDMObjective`) with the ``--edm-*``
options (:data:`OBJECTIVE_FLAGS`); an objective's options given with another objective
are refused. The run records the objective in ``config.json["criterion"]["objective"]``,
so sampling, the pipeline and evaluation use the same math.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ...objectives import EDMObjective, GaussianObjective
from ...objectives.base import Objective
from ...objectives.flow import FlowMatching
from .cli import RecipeConfig

__all__ = ["FLOW_FLAGS", "EDM_FLAGS", "OBJECTIVE_FLAGS", "build_objective", "objective_problems", "for_objective"]

FLOW_FLAGS = {
    "flow_path": "path",
    "flow_prediction": "prediction",
    "flow_loss_weight": "loss_weight",
    "flow_time_sampler": "time_sampler",
    "flow_logit_mean": "logit_mean",
    "flow_logit_scale": "logit_scale",
    "flow_cosine_weight": "cosine_weight",
    "flow_train_eps": "train_eps",
    "flow_sample_eps": "sample_eps",
}
"""Recipe flag -> :class:`~mdtblocks.objectives.flow.FlowMatching` option."""

EDM_FLAGS = {"edm_p_mean": "p_mean", "edm_p_std": "p_std", "edm_sigma_data": "sigma_data"}
"""Recipe flag -> :class:`~mdtblocks.objectives.EDMObjective` option."""

OBJECTIVE_FLAGS: dict[str, tuple[type[Objective], dict[str, str]]] = {
    "flow": (FlowMatching, FLOW_FLAGS),
    "edm": (EDMObjective, EDM_FLAGS),
}
"""``--objective`` name -> (its class, {recipe flag: the class's option}): the flags only that objective reads."""


def build_objective(cfg: RecipeConfig) -> Objective:
    """The objective ``cfg`` names with its flags' options (:data:`OBJECTIVE_FLAGS`), or the Gaussian diffusion
    (linear, 1000 steps, learned sigma, ``--snr-gamma``).

    Raises:
        ValueError: for an option the objective refuses (the message names the value).
    """
    if cfg.objective in OBJECTIVE_FLAGS:
        cls, flags = OBJECTIVE_FLAGS[cfg.objective]
        return cls(**{option: getattr(cfg, name) for name, option in flags.items()})
    return GaussianObjective("linear", 1000, learn_sigma=True, snr_gamma=cfg.snr_gamma)


def objective_problems(cfg: RecipeConfig, given: Mapping[str, Any]) -> list[str]:
    """Why the objective flags do not fit together: an objective's options (``--flow-*``, ``--edm-*``) with another
    ``--objective``, ``--snr-gamma`` given with an objective that has no SNR weighting (a recipe's own default is
    dropped by :func:`for_objective`), a bad option."""
    problems = []
    if cfg.model.startswith("SiT-") and cfg.objective != "flow":
        problems.append(f"{cfg.model} is trained as a flow (its forward drops the variance channels); use --objective flow")
    if cfg.objective != "gaussian" and "snr_gamma" in given and cfg.snr_gamma is not None:
        problems.append(
            f"--snr-gamma {cfg.snr_gamma} weights the Gaussian diffusion's loss; --objective {cfg.objective} has no SNR weighting"
        )
    for name, (_, flags) in OBJECTIVE_FLAGS.items():
        stray = [f"--{n.replace('_', '-')}" for n in flags if n in given]
        if stray and name != cfg.objective:
            problems.append(f"{', '.join(stray)} apply to --objective {name} (this run trains --objective {cfg.objective})")
    if cfg.objective in OBJECTIVE_FLAGS:
        try:
            build_objective(cfg)
        except ValueError as err:
            problems.append(f"--objective {cfg.objective}: {err}")
    return problems


def for_objective(cfg: RecipeConfig) -> RecipeConfig:
    """``cfg`` with the Gaussian-only defaults of a recipe (MDTv2's ``snr_gamma``) cleared for ``--objective flow``,
    so the flags recorded in ``config.json`` say what trained the run."""
    if cfg.objective != "gaussian" and cfg.snr_gamma is not None:
        return dataclasses.replace(cfg, snr_gamma=None)
    return cfg


