"""Datasets (image folders, built-in digits, latent caches), autoencoders, a resumable sampler, image grids."""

from .autoencoder import DEFAULT_VAE, Autoencoder, KLAutoencoder, PixelSpace, autoencoder_fingerprint, load_autoencoder
from .digits import DigitsDataset
from .in_memory import InMemoryImages
from .grid import grid_scale, save_image_grid
from .image_folder import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    ImageFolderListing,
    list_image_folder,
    scan_image_folder,
    upsampling_warning,
)
from .mnist import MNIST5K_SPLITS, MNIST5kDataset, find_mnist5k
from .latents import LATENT_FORMAT, LatentDataset, LatentWriter, shard_is_complete, write_meta
from .extract import batch_generator, encode_dataset, merge_parts
from .sampler import ResumableSampler
from .vae_provenance import LATENT_SPACE_KEYS, recorded_vae_source, vae_mismatch, vae_provenance
from .transforms import center_crop, pil_to_tensor, to_uint8

__all__ = [
    "DEFAULT_VAE",
    "Autoencoder",
    "KLAutoencoder",
    "PixelSpace",
    "load_autoencoder",
    "autoencoder_fingerprint",
    "DigitsDataset",
    "InMemoryImages",
    "MNIST5kDataset",
    "MNIST5K_SPLITS",
    "find_mnist5k",
    "save_image_grid",
    "grid_scale",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "list_image_folder",
    "scan_image_folder",
    "ImageFolderListing",
    "upsampling_warning",
    "LATENT_FORMAT",
    "LatentDataset",
    "LatentWriter",
    "encode_dataset",
    "batch_generator",
    "shard_is_complete",
    "merge_parts",
    "write_meta",
    "ResumableSampler",
    "LATENT_SPACE_KEYS",
    "vae_provenance",
    "vae_mismatch",
    "recorded_vae_source",
    "center_crop",
    "pil_to_tensor",
    "to_uint8",
]
