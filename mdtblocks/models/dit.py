"""DiT (Peebles and Xie, 2023): the plain adaLN-Zero transformer baseline."""

from __future__ import annotations

from jaxtyping import Float, Int, Shaped
from diffusers import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks the base up here
from torch import Tensor, nn

from ..blocks import AdaLNBlock
from ..masking.route import RoutePlan, as_routes, check_span
from ..masking.router import SpanRouter
from .base import DiffusionBackbone
from .config import DiTConfig

__all__ = ["DiT"]


class DiT(DiffusionBackbone):
    """Diffusion Transformer: patch tokens with a fixed sin-cos position table, ``depth``
    adaLN-Zero blocks without relative bias, and a modulated linear head.

    Build with :meth:`from_preset` (``"DiT-XL/2"``, ...) or from a
    :class:`~mdtblocks.models.config.DiTConfig`; load official weights (including
    ``DiT-XL-2-256x256.pt``) with :func:`~mdtblocks.load_official`.
    """

    config_class = DiTConfig

    def __init__(self, config: DiTConfig) -> None:
        super().__init__(config)
        cfg = config
        # DiT's position table is fixed; it stays a parameter (frozen) so that parameter
        # counts and state-dict keys match the official model.
        self.pos_embed.requires_grad_(False)
        self.blocks = nn.ModuleList(
            AdaLNBlock(cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio, grid=None, backend=cfg.attention_backend)  # type: ignore[arg-type]
            for _ in range(cfg.depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation (fixed sin-cos positions, Xavier linears, adaLN-Zero)."""
        super().reset_parameters()
        for block in self.blocks:
            block.reset_parameters()

    def trunk(self) -> list[nn.Module]:
        """The ``depth`` adaLN-Zero blocks."""
        return list(self.blocks)

    def forward(
        self,
        x: Float[Tensor, "b c hh ww"],
        t: Shaped[Tensor, "b"],
        y: Int[Tensor, "b"],
        ids_keep: Int[Tensor, "b k"] | None = None,
        route: RoutePlan | list[RoutePlan] | tuple[RoutePlan, ...] | None = None,
    ) -> Float[Tensor, "b c2 hh ww"]:
        """Predict the model output for ``x`` at timesteps ``t`` with labels ``y``.

        ``ids_keep`` exists only for signature compatibility with
        :class:`~mdtblocks.MaskedDiffusionTransformer`; DiT has no masked pass and
        rejects it. ``route`` (training only; see :class:`~mdtblocks.masking.route.Route`),
        one drawn route or a list with disjoint spans, lets its routed tokens skip the
        blocks ``[route.start, route.end)``; without it the model is the plain DiT.
        """
        if ids_keep is not None:
            raise ValueError("DiT has no masked pass; ids_keep must be None")
        opening = self.embed_inputs(x, t, y, route=route)
        h, c = opening.tokens, opening.c
        router = SpanRouter(opening.routes)
        for i, blk in enumerate(self.blocks):
            h = router.leave(i, blk(router.enter(i, h), c))
        return self.head(h, c)

    def route_tokens(self, start: int, num_kept: int | None = None) -> int:
        """Tokens reaching block ``start``, which a :class:`~mdtblocks.masking.route.Route` is drawn for.

        All ``n`` tokens (or ``num_kept`` where a pass keeps fewer): DiT's blocks all see the same tokens.
        """
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(self.blocks):
            raise ValueError(f"route start {start!r} is not a block index in [0, {len(self.blocks)})")
        return self.num_tokens if num_kept is None else num_kept

    def check_route(self, route: object, batch_size: int, num_kept: int | None = None) -> tuple[RoutePlan, ...]:
        """Raise ``TypeError``/``ValueError`` unless ``route`` fits this model and batch; return its routes.

        ``num_kept`` is accepted for the backbones' common signature; DiT has no pass that keeps fewer tokens.
        """
        routes = as_routes(route)
        for r in routes:
            check_span(r.start, r.end, len(self.blocks))
            r.validate(batch_size, self.num_tokens if num_kept is None else num_kept, self.check_values)
        return routes
