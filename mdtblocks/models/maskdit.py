"""MaskDiT (Zheng, Nie, Vahdat, Anandkumar, TMLR 2024): a DiT encoder on the kept tokens, a narrow decoder on all of them."""

from __future__ import annotations

import torch
from diffusers import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks the base up here
from jaxtyping import Float, Int, Shaped
from torch import Tensor, nn

from ..blocks import AdaLNBlock, FinalLayer, ZeroNullLabelEmbedder, sincos_2d
from ..masking import MaskSampler
from ..masking.route import RoutePlan, as_routes, check_span
from ..masking.router import SpanRouter
from ..masking.maskdit import maskdit_drop_rule
from .base import DiffusionBackbone
from .config import MaskDiTConfig

__all__ = ["MaskDiT"]


class MaskDiT(DiffusionBackbone):
    """Masked DiT: an asymmetric encoder-decoder that drops tokens in training to save compute.

    - **Encoder**: the patch tokens with DiT's fixed sin-cos positions, then ``depth``
      adaLN-Zero blocks of width ``hidden_size``. In training (``ids_keep`` given) it
      sees only the kept tokens, so its cost falls with the mask ratio (official: half).
    - **Decoder**: a modulated projection from the encoder width to
      ``decoder_hidden_size``; the dropped positions are filled with one learned mask
      token; a fixed sin-cos table of the decoder width is added; ``decoder_depth``
      adaLN-Zero blocks (conditioned on the encoder-width ``c``) and the final layer
      run on every token.
    - **Conditioning**: ``c = embed(t) + embed(y)``, the label embedding a linear map of
      one-hot labels with a zero null class
      (:class:`~mdtblocks.blocks.ZeroNullLabelEmbedder`).

    Without ``ids_keep`` (sampling, and the unmasked fine-tune stage) every token goes
    through both halves and the mask token is unused. The training loss is the objective's
    (EDM as in the paper, or the Gaussian diffusion or flow matching) on the visible
    patches plus an MAE reconstruction term on the dropped ones
    (:mod:`mdtblocks.losses.mae`); the token choice is the criterion's
    :class:`~mdtblocks.tokens.MaskDiTDropRule` (the config's ``mask_ratio`` is its legacy
    record, and :attr:`mask_sampler` a compatibility view of it).

    Build with :meth:`from_preset` (``"MaskDiT-XL/2"``, ...) or from a
    :class:`~mdtblocks.models.config.MaskDiTConfig`.
    """

    config_class = MaskDiTConfig
    config: MaskDiTConfig

    def __init__(self, config: MaskDiTConfig) -> None:
        super().__init__(config)
        cfg = config
        d, dd = cfg.hidden_size, cfg.decoder_hidden_size
        self.y_embedder = ZeroNullLabelEmbedder(cfg.num_classes, d)
        self.pos_embed.requires_grad_(False)  # fixed sin-cos, as in DiT
        self.blocks = nn.ModuleList(
            AdaLNBlock(d, cfg.num_heads, cfg.mlp_ratio, backend=cfg.attention_backend)  # type: ignore[arg-type]
            for _ in range(cfg.depth)
        )
        # The encoder-to-decoder projection is a final layer whose "patch" is one token of
        # decoder width: LayerNorm, adaLN shift/scale from c, then Linear(d -> dd).
        self.decoder_embed = FinalLayer(d, 1, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            AdaLNBlock(dd, cfg.decoder_num_heads, cfg.mlp_ratio, backend=cfg.attention_backend, cond_size=d)  # type: ignore[arg-type]
            for _ in range(cfg.decoder_depth)
        )
        self.final_layer = FinalLayer(dd, cfg.patch_size, cfg.out_channels, cond_size=d)
        self.reset_parameters()

    @property
    def mask_sampler(self) -> MaskSampler | None:  # type: ignore[override]
        """Compatibility view: the drop sampler of the config's legacy ``mask_ratio`` (``None`` at 0 or
        ``None``); training draws from the criterion's :class:`~mdtblocks.tokens.MaskDiTDropRule`."""
        ratio = self.config.mask_ratio
        return maskdit_drop_rule(ratio) if ratio is not None else None

    def reset_parameters(self) -> None:
        """Official initialisation: DiT's for the encoder, the same zeroing for the decoder, N(0, 0.02) mask token."""
        super().reset_parameters()
        for block in (*self.blocks, *self.decoder_blocks):
            block.reset_parameters()
        self.decoder_embed.reset_parameters()
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_pos_embed.data.copy_(sincos_2d(self.config.decoder_hidden_size, self.config.grid).unsqueeze(0))

    def trunk(self) -> list[nn.Module]:
        """Encoder blocks (width ``hidden_size``) then decoder blocks (width ``decoder_hidden_size``)."""
        return [*self.blocks, *self.decoder_blocks]

    @property
    def kept_only_blocks(self) -> int:  # type: ignore[override]
        """The encoder blocks: with ``ids_keep`` they see only the kept tokens, in ``ids_keep`` order."""
        return len(self.blocks)

    def encode(
        self, h: Float[Tensor, "b k d"], c: Float[Tensor, "b d"], routes: tuple[RoutePlan, ...] = ()
    ) -> Float[Tensor, "b k d"]:
        """Run the encoder blocks over the tokens present (all, or the kept ones); routed tokens skip their spans."""
        router = SpanRouter(routes)
        for i, blk in enumerate(self.blocks):
            h = router.leave(i, blk(router.enter(i, h), c))
        return h

    def route_tokens(self, start: int, num_kept: int | None = None) -> int:
        """Tokens reaching encoder block ``start`` (all ``n``, or the ``num_kept`` a pass with dropping keeps).

        Routing (:class:`~mdtblocks.masking.route.Route`) covers encoder blocks only: the
        decoder runs on every position, mask tokens included.
        """
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(self.blocks):
            raise ValueError(f"route start {start!r} is not an encoder block index in [0, {len(self.blocks)}) (MaskDiT routes within its encoder)")
        return self.num_tokens if num_kept is None else num_kept

    def check_route(self, route: object, batch_size: int, num_kept: int | None = None) -> tuple[RoutePlan, ...]:
        """Raise ``TypeError``/``ValueError`` unless ``route`` fits the encoder and the pass's tokens; return its routes."""
        routes = as_routes(route)
        for r in routes:
            check_span(r.start, r.end, len(self.blocks))
            r.validate(batch_size, self.num_tokens if num_kept is None else num_kept, self.check_values)
        return routes

    def decode(
        self,
        h: Float[Tensor, "b k d"],
        c: Float[Tensor, "b dc"],
        ids_keep: Int[Tensor, "b k"] | None = None,
    ) -> Float[Tensor, "b n dd"]:
        """Project to the decoder width, fill dropped positions with the mask token, run the decoder blocks."""
        z = self.decoder_embed(h, c)  # (b, k, dd)
        if ids_keep is not None:
            b, k, dd = z.shape
            full = self.mask_token.to(z.dtype).expand(b, self.num_tokens, dd)  # (b, n, dd); scatter copies it
            z = full.scatter(1, ids_keep.unsqueeze(-1).expand(b, k, dd), z)
        elif self.training and torch.is_grad_enabled():
            # The unmasked (fine-tune) pass uses the mask token with weight 0: DDP then sees
            # every parameter in both stages, and the output is unchanged.
            z = z + 0.0 * self.mask_token.to(z.dtype)
        z = z + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            z = blk(z, c)
        return z

    def forward(
        self,
        x: Float[Tensor, "b c hh ww"],
        t: Shaped[Tensor, "b"],
        y: Int[Tensor, "b"],
        ids_keep: Int[Tensor, "b k"] | None = None,
        route: RoutePlan | list[RoutePlan] | tuple[RoutePlan, ...] | None = None,
    ) -> Float[Tensor, "b c2 hh ww"]:
        """The network output ``F`` for input ``x`` at time ``t`` (EDM: ``c_noise``) with labels ``y``.

        Args:
            x: ``(b, in_channels, input_size, input_size)`` (EDM: the ``c_in``-scaled noisy input).
            t: ``(b,)`` times, embedded as given.
            y: ``(b,)`` labels in ``[0, num_classes]``; ``num_classes`` is the null class.
            ids_keep: the ``(b, k)`` kept tokens of a training pass with dropping (e.g.
                ``MaskDiTDropRule(0.5).draw(...).ids_keep``); ``None`` runs every token. The
                output does not depend on their order within a row.
            route: TREAD token routing in training (drawn over the tokens the encoder sees:
                ``route_tokens``); its routed tokens skip encoder blocks ``[start, end)``.

        Returns:
            ``(b, out_channels, input_size, input_size)`` for every patch, dropped ones included.
        """
        opening = self.embed_inputs(x, t, y, ids_keep, route)
        tokens, c = opening.tokens, opening.c  # (b, n, d), (b, d)
        if ids_keep is not None:
            tokens = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # (b, k, d)
        h = self.encode(tokens, c, opening.routes)
        return self.head(self.decode(h, c, ids_keep), c)
