"""Losses beyond an objective's own: reductions over patches and auxiliary terms (MaskDiT's MAE reconstruction)."""

from .mae import MaskDiTLoss, mae_reconstruction_loss, visible_patch_mean

__all__ = ["MaskDiTLoss", "mae_reconstruction_loss", "visible_patch_mean"]
