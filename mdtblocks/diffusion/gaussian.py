"""``GaussianDiffusion``: the official ADM / DiT / MDT method names, forwarding to the free functions.

This layer holds no logic. Each method is the free function of :mod:`~mdtblocks.diffusion.reverse`,
:mod:`~mdtblocks.diffusion.loops`, :mod:`~mdtblocks.diffusion.losses` or :mod:`~mdtblocks.diffusion.bpd` with the process as ``self``; the
official table attributes (``diffusion.alphas_cumprod``) read :attr:`~GaussianProcess.tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..typing import Image
from . import bpd, loops, losses, reverse
from .process import GaussianProcess

__all__ = ["GaussianDiffusion"]


def _progressive(loop: Callable[..., Image]) -> Callable[..., Iterator[dict[str, Image]]]:
    def progressive(self: GaussianDiffusion, *args: Any, **kwargs: Any) -> Iterator[dict[str, Image]]:
        outputs: list[dict[str, Image]] = []
        loop(self, *args, callback=outputs.append, **kwargs)
        return iter(outputs)

    progressive.__doc__ = f"The outputs of every step of :meth:`{loop.__name__}` (official name; see its callback)."
    return progressive


class GaussianDiffusion(GaussianProcess):
    """A Gaussian diffusion process under the official method names.

    ``q_sample``, ``q_posterior_mean_variance``, ``p_mean_variance``, ``p_sample``,
    ``p_sample_loop(_progressive)``, ``ddim_sample``, ``ddim_sample_loop(_progressive)``,
    ``training_losses``, ``calc_bpd_loop`` keep the official signatures. Timesteps ``t``
    are indices into this (possibly respaced) process; the model is called with
    ``timestep_map[t]``, the steps of the original process it was trained on. Unlike
    the official code, a v-prediction model is also sampled as v. Build one with
    :func:`~mdtblocks.create_diffusion`; the arguments are those of :class:`GaussianProcess`.
    """

    p_mean_variance = reverse.p_mean_variance
    p_mean_variance_from_output = reverse.p_mean_variance_from_output
    p_sample = reverse.p_sample
    ddim_sample = reverse.ddim_sample
    ddim_reverse_sample = reverse.ddim_reverse_sample
    p_sample_loop = loops.p_sample_loop
    ddim_sample_loop = loops.ddim_sample_loop
    p_sample_loop_progressive = _progressive(loops.p_sample_loop)
    ddim_sample_loop_progressive = _progressive(loops.ddim_sample_loop)
    training_losses = losses.training_losses
    calc_bpd_loop = bpd.calc_bpd_loop
    _prior_bpd = bpd.prior_bpd

    @property
    def use_timesteps(self) -> set[int]:
        """The original steps this process visits (the official attribute)."""
        return set(self.timestep_map.tolist())

    def __getattr__(self, name: str) -> Any:
        # The official tables are attributes of the diffusion: diffusion.betas, .alphas_cumprod, ...
        tables = self.__dict__.get("tables")
        if tables is not None and hasattr(tables, name):
            return getattr(tables, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
