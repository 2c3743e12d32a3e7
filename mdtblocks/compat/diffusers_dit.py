"""Convert a DiT to diffusers' ``DiTTransformer2DModel`` and back.

The two modules hold the same weights in different places: diffusers splits the fused
``qkv`` projection into ``to_q``/``to_k``/``to_v`` and gives every block its own copy of
the timestep and label embedders (they are identical after conversion). Two things are
*not* the same function, and neither is hidden here:

* the timestep features: diffusers' DiT embeds ``t`` with frequencies
  ``10000^(-i / (half - 1))`` (``downscale_freq_shift=1``), the official DiT (and
  mdtblocks) with ``10000^(-i / half)``. An exported model therefore computes a slightly
  different function; ``docs/diffusers.md`` gives the measured difference.
  ``exact_timesteps=True`` switches the exported model's in-memory time projection to the
  official frequencies, for parity checks; that setting is not part of diffusers' config
  and is lost by ``save_pretrained``.
* the position table: diffusers recomputes it (a non-persistent buffer); it is the same
  sin-cos table as ours, and a model whose table was changed is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.config import DiTConfig
from ..models.dit import DiT

__all__ = ["dit_to_diffusers", "dit_from_diffusers"]

_NORM_EPS = 1e-6  # the official blocks' LayerNorm eps


def _blocks_map(depth: int) -> list[tuple[str, str]]:
    pairs = []
    for i in range(depth):
        ours, theirs = f"blocks.{i}.", f"transformer_blocks.{i}."
        pairs += [
            (ours + "adaLN_modulation.1.weight", theirs + "norm1.linear.weight"),
            (ours + "adaLN_modulation.1.bias", theirs + "norm1.linear.bias"),
            (ours + "attn.proj.weight", theirs + "attn1.to_out.0.weight"),
            (ours + "attn.proj.bias", theirs + "attn1.to_out.0.bias"),
            (ours + "mlp.fc1.weight", theirs + "ff.net.0.proj.weight"),
            (ours + "mlp.fc1.bias", theirs + "ff.net.0.proj.bias"),
            (ours + "mlp.fc2.weight", theirs + "ff.net.2.weight"),
            (ours + "mlp.fc2.bias", theirs + "ff.net.2.bias"),
        ]
    return pairs


_HEAD = [
    ("x_embedder.proj.weight", "pos_embed.proj.weight"),
    ("x_embedder.proj.bias", "pos_embed.proj.bias"),
    ("final_layer.adaLN_modulation.1.weight", "proj_out_1.weight"),
    ("final_layer.adaLN_modulation.1.bias", "proj_out_1.bias"),
    ("final_layer.linear.weight", "proj_out_2.weight"),
    ("final_layer.linear.bias", "proj_out_2.bias"),
]
_EMBED = [
    ("t_embedder.mlp.0.weight", "norm1.emb.timestep_embedder.linear_1.weight"),
    ("t_embedder.mlp.0.bias", "norm1.emb.timestep_embedder.linear_1.bias"),
    ("t_embedder.mlp.2.weight", "norm1.emb.timestep_embedder.linear_2.weight"),
    ("t_embedder.mlp.2.bias", "norm1.emb.timestep_embedder.linear_2.bias"),
    ("y_embedder.embedding_table.weight", "norm1.emb.class_embedder.embedding_table.weight"),
]


def _exact_timesteps(transformer: Any) -> None:
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0


def dit_to_diffusers(model: DiT, *, exact_timesteps: bool = False) -> Any:
    """A diffusers ``DiTTransformer2DModel`` holding ``model``'s weights (an own DiT or
    one read by :func:`~mdtblocks.load_official`).

    Args:
        model: the DiT; it needs a null-class row (``class_dropout_prob > 0``), as diffusers'
            label embedder always has one.
        exact_timesteps: use the official timestep frequencies in the returned module (not
            saved with it; see the module docstring).

    Returns:
        The transformer in eval mode, on ``model``'s device and dtype.

    Raises:
        TypeError: for a model that is not a :class:`~mdtblocks.DiT`.
        ValueError: for a DiT without a null class or with a changed position table.
    """
    from diffusers import DiTTransformer2DModel

    if not isinstance(model, DiT):
        raise TypeError(f"dit_to_diffusers needs an mdtblocks DiT, got {type(model).__name__}")
    cfg = model.config
    if not model.y_embedder.has_null:
        raise ValueError(
            "diffusers' DiT always has a null-class row; this DiT has class_dropout_prob=0 and none, so it cannot be exported"
        )
    d = cfg.hidden_size
    transformer = DiTTransformer2DModel(
        num_attention_heads=cfg.num_heads,
        attention_head_dim=d // cfg.num_heads,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.depth,
        sample_size=cfg.input_size,
        patch_size=cfg.patch_size,
        num_embeds_ada_norm=cfg.num_classes,
        norm_eps=_NORM_EPS,
    )
    if int(d * cfg.mlp_ratio) != 4 * d:
        raise ValueError(f"diffusers' DiT has an MLP ratio of 4; this DiT has mlp_ratio={cfg.mlp_ratio}")
    ours = model.state_dict()
    table = transformer.pos_embed.pos_embed
    if not torch.allclose(ours["pos_embed"].float().cpu(), table.float(), atol=1e-5):
        raise ValueError("this DiT's position table differs from the fixed sin-cos table diffusers recomputes")
    state: dict[str, Tensor] = {theirs: ours[k] for k, theirs in _HEAD + _blocks_map(cfg.depth)}
    for i in range(cfg.depth):
        q, k, v = ours[f"blocks.{i}.attn.qkv.weight"].chunk(3)
        qb, kb, vb = ours[f"blocks.{i}.attn.qkv.bias"].chunk(3)
        p = f"transformer_blocks.{i}.attn1."
        state.update({p + "to_q.weight": q, p + "to_k.weight": k, p + "to_v.weight": v})
        state.update({p + "to_q.bias": qb, p + "to_k.bias": kb, p + "to_v.bias": vb})
        for k_ours, k_theirs in _EMBED:
            state[f"transformer_blocks.{i}.{k_theirs}"] = ours[k_ours]
    transformer.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    if exact_timesteps:
        _exact_timesteps(transformer)
    p0 = next(model.parameters())
    transformer.to(p0.device)
    if p0.dtype != torch.float32:  # diffusers warns on any dtype cast, even a no-op one
        transformer.to(p0.dtype)
    return transformer.eval()


def dit_from_diffusers(transformer: Any, **config: Any) -> DiT:
    """An mdtblocks :class:`~mdtblocks.DiT` holding a diffusers ``DiTTransformer2DModel``'s weights.

    Args:
        transformer: the diffusers module (e.g. from ``DiTPipeline.from_pretrained``).
        **config: config fields the weights cannot tell, e.g. ``attention_backend``.

    Returns:
        The DiT in eval mode, on the transformer's device and dtype. It computes the
        official DiT function (official timestep frequencies).

    Raises:
        TypeError: for another module type.
        ValueError: for a configuration DiT cannot express (another activation, norm or
            attention layout) or blocks whose embedder copies differ.
    """
    from diffusers import DiTTransformer2DModel

    if not isinstance(transformer, DiTTransformer2DModel):
        raise TypeError(f"dit_from_diffusers needs a diffusers DiTTransformer2DModel, got {type(transformer).__name__}")
    c = transformer.config
    expected = {"activation_fn": "gelu-approximate", "norm_type": "ada_norm_zero", "attention_bias": True,
                "norm_elementwise_affine": False}
    for key, value in expected.items():
        if c[key] != value:
            raise ValueError(f"DiT needs {key}={value!r}, the transformer has {key}={c[key]!r}")
    out = transformer.out_channels
    if out not in (c.in_channels, 2 * c.in_channels):
        raise ValueError(f"out_channels={out} is neither in_channels={c.in_channels} nor twice it")
    fields = dict(
        input_size=c.sample_size, patch_size=c.patch_size, in_channels=c.in_channels,
        hidden_size=c.num_attention_heads * c.attention_head_dim, depth=c.num_layers,
        num_heads=c.num_attention_heads, mlp_ratio=4.0, num_classes=c.num_embeds_ada_norm,
        class_dropout_prob=0.1, learn_sigma=out == 2 * c.in_channels,
    )
    fields.update(config)
    model = DiT(DiTConfig(**fields))
    theirs = transformer.state_dict()
    state: dict[str, Tensor] = {k: theirs[t] for k, t in _HEAD + _blocks_map(c.num_layers)}
    for i in range(c.num_layers):
        p = f"transformer_blocks.{i}.attn1."
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([theirs[p + f"to_{n}.weight"] for n in "qkv"])
        state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([theirs[p + f"to_{n}.bias"] for n in "qkv"])
    for k_ours, k_theirs in _EMBED:
        first = theirs[f"transformer_blocks.0.{k_theirs}"]
        for i in range(1, c.num_layers):
            if not torch.equal(theirs[f"transformer_blocks.{i}.{k_theirs}"], first):
                raise ValueError(f"block {i}'s {k_theirs} differs from block 0's; DiT shares one embedder")
        state[k_ours] = first
    state["pos_embed"] = transformer.pos_embed.pos_embed.detach().to(first.dtype)
    model.load_state_dict({k: v.detach().clone().cpu().float() for k, v in state.items()}, strict=True)
    p0 = first
    return model.to(device=p0.device, dtype=p0.dtype).eval()
