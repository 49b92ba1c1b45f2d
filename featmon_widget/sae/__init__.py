"""SAEs: the SAELens on-disk format (`load_sae`, `SparseAutoencoder`) and what the monitor needs
to know about any SAE-like object (`adapter`)."""

from .adapter import sae_width
from .autoencoder import SparseAutoencoder
from .loader import load_sae

__all__ = ["SparseAutoencoder", "load_sae", "sae_width"]
