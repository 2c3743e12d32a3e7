"""The Masked Diffusion Transformer: MDT v1 and MDTv2 from one configurable module."""

from __future__ import annotations

import torch
from diffusers import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks the base up here
from jaxtyping import Float, Int, Shaped
from torch import Tensor, nn

from ..blocks import AdaLNBlock, gather_relative_index, relative_position_index, sincos_2d
from ..masking import MaskSampler, SideInterpolater
from ..masking.route import RoutePlan, as_routes, check_span
from ..masking.router import SpanRouter
from .base import DiffusionBackbone
from .config import MDTConfig

__all__ = ["MaskedDiffusionTransformer"]


class MaskedDiffusionTransformer(DiffusionBackbone):
    """Masked Diffusion Transformer (Gao et al., ICCV 2023) and MDTv2 (arXiv 2303.14389v2).

    Structure, by config:

    - **MDT v1** (``long_skip=False, dense_skip=False``): ``depth - decode_layer``
      encoder blocks, the side-interpolater (masked pass only), ``decode_layer``
      decoder blocks.
    - **MDTv2** (``long_skip=True, dense_skip=True``): the encoder in two halves, block
      ``i`` of the second half fusing the output of block ``half-1-i`` of the first
      (long shortcuts); every decoder block fuses the input tokens (dense shortcut).

    Every attention layer carries a learned relative position bias. In the masked
    pass (``ids_keep`` given) the encoder sees only the kept tokens; in the plain pass
    (inference, the unmasked training loss) it sees all of them and the
    side-interpolater is skipped.

    The side-interpolater and the decoder's position table are architecture and live here;
    which tokens a training pass keeps is the token rule's
    (:class:`~mdtblocks.tokens.MaskedTwoPassRule`). The config's ``mask_ratio`` fields are the
    legacy record of that rule, and :attr:`mask_sampler` a compatibility view of them.

    Build with :meth:`from_preset` (``"MDT-XL/2"``, ``"MDTv2-S/2"``, ...) or from an
    :class:`~mdtblocks.models.config.MDTConfig`; load official weights with
    :func:`~mdtblocks.load_official`.
    """

    config_class = MDTConfig
    config: MDTConfig

    def __init__(self, config: MDTConfig) -> None:
        super().__init__(config)
        cfg = config
        d, grid = cfg.hidden_size, cfg.grid

        def block(fuses_skip: bool = False) -> AdaLNBlock:
            return AdaLNBlock(d, cfg.num_heads, cfg.mlp_ratio, grid=grid, fuses_skip=fuses_skip, backend=cfg.attention_backend)  # type: ignore[arg-type]

        enc = cfg.encoder_depth
        self.encoder = nn.ModuleList(block(fuses_skip=cfg.long_skip and i >= enc // 2) for i in range(enc))
        self.side_interpolater = SideInterpolater(
            d, cfg.num_heads, cfg.mlp_ratio, grid, cfg.side_blocks, backend=cfg.attention_backend  # type: ignore[arg-type]
        )
        self.decoder = nn.ModuleList(block(fuses_skip=cfg.dense_skip) for _ in range(cfg.decode_layer))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, d))
        self.register_buffer("rel_index", relative_position_index(grid), persistent=False)
        self.reset_parameters()

    @property
    def mask_sampler(self) -> MaskSampler | None:  # type: ignore[override]
        """Compatibility view: ``MaskSampler(mask_ratio, mask_ratio_range)`` of the config's legacy
        fields (``None`` if ``mask_ratio`` is ``None``); training draws from the criterion's rule."""
        cfg = self.config
        return MaskSampler(cfg.mask_ratio, cfg.mask_ratio_range) if cfg.mask_ratio is not None else None

    def reset_parameters(self) -> None:
        """Official initialisation (sin-cos tables for both position embeddings)."""
        super().reset_parameters()
        for block in (*self.encoder, *self.decoder):
            block.reset_parameters()
        self.side_interpolater.reset_parameters()
        self.decoder_pos_embed.data.copy_(sincos_2d(self.config.hidden_size, self.config.grid).unsqueeze(0))

    def trunk(self) -> list[nn.Module]:
        """Encoder then decoder blocks (the side-interpolater, masked pass only, is not counted)."""
        return [*self.encoder, *self.decoder]

    @property
    def kept_only_blocks(self) -> int:  # type: ignore[override]
        """The encoder blocks: in the masked pass they see only the kept tokens, in ``ids_keep`` order."""
        return len(self.encoder)

    def encode(
        self,
        h: Float[Tensor, "b k d"],
        c: Float[Tensor, "b d"],
        rel_index: Int[Tensor, "b k k"] | None = None,
        routes: tuple[RoutePlan, ...] = (),
    ) -> Float[Tensor, "b k d"]:
        """Run the encoder over the tokens present (all, or the kept ones), routing the spans of ``routes``."""
        router = SpanRouter(routes, rel_index=rel_index, full_index=self.rel_index)
        depth = len(self.encoder)
        half = depth // 2 if self.config.long_skip else depth
        skips = []
        for i, blk in enumerate(self.encoder):
            h = router.enter(i, h)
            skip = router.side(i, skips.pop(), produced_at=depth - 1 - i) if i >= half else None
            h = blk(h, c, skip=skip, rel_index=router.rel_index(i))
            if i < half and self.config.long_skip:
                skips.append(h)
            h = router.leave(i, h)
        return h

    def forward(
        self,
        x: Float[Tensor, "b c hh ww"],
        t: Shaped[Tensor, "b"],
        y: Int[Tensor, "b"],
        ids_keep: Int[Tensor, "b k"] | None = None,
        route: RoutePlan | list[RoutePlan] | tuple[RoutePlan, ...] | None = None,
    ) -> Float[Tensor, "b c2 hh ww"]:
        """Predict the model output for noisy input ``x`` at timesteps ``t`` with labels ``y``.

        Args:
            x: noisy latents (or images), ``(b, in_channels, input_size, input_size)``.
            t: the objective's times (integer or float valued, any finite value: Gaussian step indices, flow t, ...).
            y: class labels in ``[0, num_classes]`` (``num_classes`` is the null class).
            ids_keep: for the masked training pass, the ``(b, k)`` kept-token indices in
                row-major patch order (a token rule's plan, e.g. ``MaskedTwoPassRule(0.3).draw(...).ids_keep``). The
                result does not depend on their order within a row.
            route: token routing for training (see :class:`~mdtblocks.masking.route.Route`
                and :meth:`route_tokens`), one drawn route or a list with disjoint spans: its
                routed tokens skip the blocks ``[route.start, route.end)``, numbered over the
                encoder then the decoder. Without it the model is the plain one.

        Returns:
            ``(b, out_channels, input_size, input_size)``: epsilon (and the variance
            interpolation ``v`` channels when ``learn_sigma``).
        """
        opening = self.embed_inputs(x, t, y, ids_keep, route)
        tokens, c, routes = opening.tokens, opening.c, opening.routes
        enc_routes = tuple(r for r in routes if r.end <= len(self.encoder))
        if ids_keep is None:
            h = self.encode(tokens, c, routes=enc_routes)
            # The decoder position table marks the encoder/decoder boundary. MDT v1 adds it
            # before its first decoder block, so a v1 model without decoder blocks never
            # does; MDTv2 adds it after the encoder unconditionally (official behaviour).
            if len(self.decoder) > 0 or self.config.long_skip:
                h = h + self.decoder_pos_embed
        else:
            kept = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            h = self.encode(kept, c, gather_relative_index(self.rel_index, ids_keep), routes=enc_routes)
            h = self.side_interpolater(h, c, ids_keep, self.decoder_pos_embed)
        skip = tokens if self.config.dense_skip else None
        router = SpanRouter(routes[len(enc_routes):], len(self.encoder), full_index=self.rel_index)
        for i, blk in enumerate(self.decoder):
            h = router.enter(i, h)
            h = router.leave(i, blk(h, c, skip=None if skip is None else router.side(i, skip), rel_index=router.rel_index(i)))
        return self.head(h, c)

    def route_tokens(self, start: int, num_kept: int | None = None) -> int:
        """Tokens reaching block ``start``, which a :class:`~mdtblocks.masking.route.Route` is drawn for.

        Blocks are numbered over the encoder (``0 .. encoder_depth - 1``), then the decoder;
        the side-interpolater is never routed. An encoder block sees ``num_kept`` tokens in
        the masked pass (routing applies to the tokens that pass keeps), every other block
        all ``n``.
        """
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(self.encoder) + len(self.decoder):
            raise ValueError(f"route start {start!r} is not a block index in [0, {len(self.encoder) + len(self.decoder)})")
        return num_kept if num_kept is not None and start < len(self.encoder) else self.num_tokens

    def check_route(self, route: object, batch_size: int, num_kept: int | None = None) -> tuple[RoutePlan, ...]:
        """Raise ``TypeError``/``ValueError`` unless ``route`` fits this model and pass; return its routes.

        A span lies in the encoder or in the decoder, never across the side-interpolater
        and decoder position table between them. In MDTv2 a span that starts in the first
        encoder half must reach past the blocks that consume the long shortcuts it
        produces (``start + end >= encoder_depth``); shortcuts entering a span from
        outside are reduced to the tokens going through.
        """
        enc, dec = len(self.encoder), len(self.decoder)
        routes = as_routes(route)
        for r in routes:
            check_span(r.start, r.end, enc + dec)
            if r.start < enc < r.end:
                raise ValueError(
                    f"route span [{r.start}, {r.end}) crosses the encoder/decoder boundary at block {enc} "
                    f"(side-interpolater and decoder positions); route within [0, {enc}) or [{enc}, {enc + dec})"
                )
            if self.config.long_skip and r.start < enc // 2 and r.start + r.end < enc:
                raise ValueError(
                    f"route span [{r.start}, {r.end}) produces MDTv2 long shortcuts (blocks {r.start}.."
                    f"{min(r.end, enc // 2) - 1}) that blocks after it consume; end it at block {enc - r.start} or later"
                )
            r.validate(batch_size, self.route_tokens(r.start, num_kept), self.check_values)
        return routes
