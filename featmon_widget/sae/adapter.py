"""What the monitor needs to know about any SAE-like object: ours, a `sae_lens.SAE`, or anything
with `encode(x)` and a width."""

from __future__ import annotations

from typing import Any

import torch

from .autoencoder import SparseAutoencoder


def sae_width(sae: Any) -> int:
    """The number of features of an SAE-like object (`d_sae`, `cfg.d_sae` or `W_enc`'s width)."""
    cfg = getattr(sae, "cfg", None)
    for candidate in (getattr(sae, "d_sae", None), getattr(cfg, "d_sae", None)):
        if isinstance(candidate, int) and candidate > 0:
            return candidate
    w_enc = getattr(sae, "W_enc", None)
    if isinstance(w_enc, torch.Tensor) and w_enc.dim() == 2:
        return int(w_enc.shape[1])
    raise TypeError(f"cannot tell the width of {type(sae).__name__}: give it a d_sae attribute")


def sae_id(sae: Any) -> str | None:
    """A short name for the state line: `name`, `cfg.neuronpedia_id`, or the class name."""
    if sae is None:
        return None
    name = getattr(sae, "name", None) or getattr(getattr(sae, "cfg", None), "neuronpedia_id", None)
    return str(name) if name else type(sae).__name__


def sae_device(sae: Any) -> torch.device | None:
    """The device of the SAE's first parameter, if it has parameters."""
    param = next(iter(getattr(sae, "parameters", lambda: iter(()))()), None)
    return None if param is None else param.device


def is_own_sae(sae: Any) -> bool:
    """Our own class: its encode is compiled together with the statistics."""
    return isinstance(sae, SparseAutoencoder)


def has_sparse_encode(sae: Any) -> bool:
    """Our TopK SAEs give (indices, values) directly."""
    return is_own_sae(sae) and sae.architecture == "topk"


def flatten_heads(sae: Any, x: torch.Tensor) -> torch.Tensor:
    """Per-head outputs `[..., heads, d_head]` of a hook_z SAE as `[..., d_in]`; other inputs as
    they are."""
    d_in = getattr(sae, "d_in", None)
    if isinstance(d_in, int) and x.dim() >= 2 and x.shape[-1] != d_in \
            and x.shape[-2] * x.shape[-1] == d_in:
        return x.flatten(-2)
    return x


def jump_thresholds(sae: Any) -> torch.Tensor | None:
    """For our own float32 ``standard`` / ``jumprelu`` SAEs, the activation as JumpReLU
    thresholds ``[d_sae]`` float32: ``encode(x) == relu(pre) * (pre > t)`` with ``pre =
    sae.pre_activations(x)`` (``-inf`` everywhere for a ReLU). The statistics kernel can apply
    it in place while it reduces the features. None for any other SAE."""
    if not is_own_sae(sae) or sae.dtype != torch.float32:
        return None
    if sae.architecture == "standard":
        return torch.full((sae.d_sae,), float("-inf"), device=sae.W_enc.device)
    if sae.architecture == "jumprelu":
        return sae.threshold.detach().contiguous()
    return None


def decoder_weight(sae: Any) -> torch.Tensor:
    """The decoder matrix of an SAE-like object as ``[d_sae, d_in]`` (a view, no copy): a
    ``W_dec`` parameter (ours, SAELens, sparsify and dictionary_learning's JumpReLU, stored
    ``[d_sae, d_in]``; one stored ``[d_in, d_sae]`` is transposed) or a ``decoder`` linear
    layer (dictionary_learning's other SAEs: weight ``[d_in, d_sae]``). ValueError when it has
    neither."""
    width = sae_width(sae)
    w_dec = getattr(sae, "W_dec", None)
    if isinstance(w_dec, torch.Tensor) and w_dec.dim() == 2:
        if w_dec.shape[0] == width:
            return w_dec.detach()
        if w_dec.shape[1] == width:
            return w_dec.detach().T
    weight = getattr(getattr(sae, "decoder", None), "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == width:
        return weight.detach().T
    raise ValueError(f"cannot find the decoder of {type(sae).__name__}: expected a W_dec "
                     f"[d_sae, d_in] or a decoder layer with d_sae={width} inputs")
