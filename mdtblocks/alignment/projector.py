"""The projector: an MLP from the backbone's width to a target feature width (REPA's head)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["Projector"]


class Projector(nn.Module):
    """``num_layers`` linear layers with SiLU between them, applied per token.

    REPA's head is ``Linear(d, 2048) SiLU Linear(2048, 2048) SiLU Linear(2048, d_enc)``
    (the defaults). Its parameters train with the backbone and belong to the training
    checkpoint (in training it sits in the backbone as ``alignment_head``, see
    :class:`~mdtblocks.alignment.AlignmentLoss`); it is not part of the model's config, so
    ``save_pretrained``, ``from_pretrained`` and exported pipelines leave it out.

    Args:
        in_dim: backbone width ``d``.
        out_dim: target feature width ``d_enc``.
        hidden_dim: width of the hidden layers.
        num_layers: linear layers (at least 1; 1 is a plain linear map).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, num_layers: int = 3) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0:
                layers.append(nn.SiLU())
            layers.append(nn.Linear(a, b))
        # Indices 0, 2, 4 hold the linears, as in REPA's nn.Sequential (weights map one to one).
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (the backbone's linear initialisation, as REPA)."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b n e"]:
        """Project every token: ``(b, n, in_dim) -> (b, n, out_dim)``."""
        if tokens.shape[-1] != self.in_dim:
            raise ValueError(f"tokens have width {tokens.shape[-1]}, the projector expects {self.in_dim}")
        return self.layers(tokens)
