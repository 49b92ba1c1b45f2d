"""`SparseAutoencoder`: an inference-only SAE with SAELens' ``encode`` / ``decode``.

It reproduces SAELens' inference for the ``standard``, ``jumprelu`` and ``topk`` architectures
(checked against SAELens 6.x); `loader.load_sae` builds one from a SAELens directory.

Semantics (``sae_in`` is the input cast to the SAE dtype):

* all architectures: ``sae_in = x - b_dec`` if ``apply_b_dec_to_input`` else ``x``;
  ``hidden_pre = sae_in @ W_enc + b_enc``; ``decode(f) = f @ W_dec + b_dec``.
* ``standard``: ``relu(hidden_pre)``.
* ``jumprelu``: ``relu(hidden_pre) * (hidden_pre > threshold)`` (the ReLU is applied
  too, so a negative threshold never lets a negative value through).
* ``topk``: ``torch.topk(hidden_pre, k)``, ReLU on the selected values, zeros elsewhere. With
  ``rescale_acts_by_decoder_norm`` the pre-activations are multiplied by ``||W_dec[i]||``
  before the top-k and the features divided by it again in ``decode``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .saelens_cfg import (
    CFG_FILENAME,
    DTYPE_NAMES,
    METADATA_KEYS,
    SAVED_CFG_VERSION,
    SUPPORTED_ARCHITECTURES,
    WEIGHTS_FILENAME,
    check_shape,
    expected_shapes,
    is_legacy_cfg,
    parse_dtype,
)


class SparseAutoencoder(nn.Module):
    """An inference-only SAE with SAELens-compatible ``encode`` / ``decode``.

    Build one with :func:`load_sae` or :meth:`from_tensors`. Parameters do not require grad.

    Attributes:
        d_in: input (model activation) width.
        d_sae: number of features.
        architecture: ``"standard"``, ``"jumprelu"`` or ``"topk"``.
        k: number of active features for ``topk`` SAEs, else ``None``.
        cfg: the config dict as read from ``cfg.json`` (or as built by ``from_tensors``).
        name: an identifier, the directory name for loaded SAEs.
        apply_b_dec_to_input: whether ``b_dec`` is subtracted from the input before encoding.
        rescale_acts_by_decoder_norm: TopK only; scale pre-activations by decoder row norms.
        reshape_activations: ``"hook_z"`` if the SAE reads flattened attention heads.
        hook_name: the model hook the SAE was trained on, if the config names one.
    """

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    threshold: nn.Parameter | None

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        architecture: str = "standard",
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = False,
        rescale_acts_by_decoder_norm: bool = False,
        reshape_activations: str = "none",
        cfg: dict[str, Any] | None = None,
        name: str = "sae",
    ) -> None:
        """Wrap existing tensors (no copy); prefer :meth:`from_tensors` or :func:`load_sae`."""
        super().__init__()
        if architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unsupported SAE architecture={architecture!r}; "
                f"supported: {list(SUPPORTED_ARCHITECTURES)}"
            )
        if W_enc.ndim != 2:
            raise ValueError(f"W_enc must be 2-D [d_in, d_sae], got shape {list(W_enc.shape)}")
        d_in, d_sae = (int(s) for s in W_enc.shape)
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if architecture == "jumprelu":
            if threshold is None:
                raise ValueError("a jumprelu SAE needs a threshold tensor")
            tensors["threshold"] = threshold
        elif threshold is not None:
            raise ValueError(f"threshold is only used by jumprelu SAEs, not {architecture!r}")
        for tname, expected in expected_shapes(architecture, d_in, d_sae).items():
            check_shape(tname, tuple(tensors[tname].shape), expected, "SparseAutoencoder")
        dtype = W_enc.dtype
        parse_dtype(dtype, "W_enc dtype")
        for tname, t in tensors.items():
            if t.dtype != dtype or t.device != W_enc.device:
                raise ValueError(
                    f"tensor {tname!r} is {t.dtype} on {t.device}, "
                    f"expected {dtype} on {W_enc.device} like W_enc"
                )
        if architecture == "topk":
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
                raise ValueError(f"topk SAE needs 1 <= k <= d_sae={d_sae}, got k={k!r}")
        else:
            if k is not None:
                raise ValueError(f"k is only used by topk SAEs, not {architecture!r}")
            if rescale_acts_by_decoder_norm:
                raise ValueError("rescale_acts_by_decoder_norm=True is only defined for topk SAEs")
        if reshape_activations not in ("none", "hook_z"):
            raise ValueError(
                f"unsupported reshape_activations={reshape_activations!r}; "
                "expected 'none' or 'hook_z'"
            )

        self.d_in: int = d_in
        self.d_sae: int = d_sae
        self.architecture: str = architecture
        self.k: int | None = k
        self.apply_b_dec_to_input: bool = bool(apply_b_dec_to_input)
        self.rescale_acts_by_decoder_norm: bool = bool(rescale_acts_by_decoder_norm)
        self.reshape_activations: str = reshape_activations
        self.name: str = name
        for tname, t in tensors.items():
            self.register_parameter(tname, nn.Parameter(t.detach(), requires_grad=False))
        if architecture != "jumprelu":
            self.register_parameter("threshold", None)
        self.cfg: dict[str, Any] = cfg if cfg is not None else self._canonical_cfg()

    # ----------------------------------------------------------------- construction / IO

    @classmethod
    def from_tensors(
        cls,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        architecture: str = "standard",
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = False,
        rescale_acts_by_decoder_norm: bool = False,
        name: str = "sae",
        hook_name: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> SparseAutoencoder:
        """Build an SAE from in-memory tensors (copied; SAELens shapes and names).

        Args:
            W_enc: ``[d_in, d_sae]`` encoder matrix.
            b_enc: ``[d_sae]`` encoder bias.
            W_dec: ``[d_sae, d_in]`` decoder matrix.
            b_dec: ``[d_in]`` decoder bias.
            architecture: ``"standard"``, ``"jumprelu"`` or ``"topk"``.
            threshold: ``[d_sae]`` JumpReLU thresholds (jumprelu only).
            k: number of active features (topk only).
            apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding.
            rescale_acts_by_decoder_norm: topk only, see the module docstring.
            name: identifier stored in ``.name``.
            hook_name: model hook name, written to ``cfg["metadata"]["hook_name"]``.
            device: target device (default: ``W_enc``'s device).
            dtype: target dtype (default: ``W_enc``'s dtype).
        """
        target_dtype = parse_dtype(dtype if dtype is not None else W_enc.dtype)
        target_device = torch.device(device) if device is not None else W_enc.device

        def prep(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device=target_device, dtype=target_dtype, copy=True)

        sae = cls(
            prep(W_enc),
            prep(b_enc),
            prep(W_dec),
            prep(b_dec),
            architecture=architecture,
            threshold=None if threshold is None else prep(threshold),
            k=k,
            apply_b_dec_to_input=apply_b_dec_to_input,
            rescale_acts_by_decoder_norm=rescale_acts_by_decoder_norm,
            name=name,
        )
        if hook_name is not None:
            sae.cfg["metadata"]["hook_name"] = hook_name
        return sae

    @property
    def hook_name(self) -> str | None:
        """The model hook the SAE reads, from the config (``metadata`` or top level)."""
        metadata = self.cfg.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("hook_name"):
            return metadata["hook_name"]
        return self.cfg.get("hook_name") or self.cfg.get("hook_point")

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights; inputs are cast to it."""
        return self.W_enc.dtype

    def _canonical_cfg(self) -> dict[str, Any]:
        """A SAELens-6 style config describing this SAE as it is now."""
        metadata: dict[str, Any] = {}
        old_cfg = getattr(self, "cfg", None)
        if old_cfg is not None:
            old_meta = old_cfg.get("metadata")
            if isinstance(old_meta, Mapping):
                metadata.update(old_meta)
            for key in METADATA_KEYS:
                if key in old_cfg and key not in metadata:
                    metadata[key] = old_cfg[key]
            hook_name = self.hook_name
            if hook_name is not None:
                metadata["hook_name"] = hook_name
        if is_legacy_cfg({"metadata": metadata}):
            metadata["sae_lens_version"] = SAVED_CFG_VERSION
            metadata.setdefault("sae_lens_training_version", None)
        cfg: dict[str, Any] = {
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": DTYPE_NAMES[self.dtype],
            "device": str(self.device),
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": self.reshape_activations,
            "metadata": metadata,
            "architecture": self.architecture,
        }
        if self.architecture == "topk":
            cfg["k"] = self.k
            cfg["rescale_acts_by_decoder_norm"] = self.rescale_acts_by_decoder_norm
        return cfg

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (SAELens 6 layout) into ``path``.

        The directory is created if needed; existing files of those names are overwritten.
        Returns the directory path.
        """
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {tname: t.detach().to("cpu").contiguous() for tname, t in self.named_parameters()}
        save_file(tensors, str(out / WEIGHTS_FILENAME), metadata={"format": "pt"})
        with open(out / CFG_FILENAME, "w") as f:
            json.dump(self._canonical_cfg(), f, indent=2)
        return out

    def extra_repr(self) -> str:
        """Short summary used by ``repr``."""
        extra = f", k={self.k}" if self.k is not None else ""
        return (
            f"name={self.name!r}, architecture={self.architecture!r}, d_in={self.d_in}, "
            f"d_sae={self.d_sae}{extra}, dtype={self.dtype}"
        )

    # ----------------------------------------------------------------------- compute

    def _prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)  # SAELens casts the input to the SAE dtype (not the device)
        if x.shape[-1] != self.d_in:
            # hook_z SAEs read [..., n_heads, d_head]; SAELens flattens the last two dims.
            if (
                self.reshape_activations == "hook_z"
                and x.ndim >= 2
                and x.shape[-2] * x.shape[-1] == self.d_in
            ):
                x = x.flatten(-2)
            else:
                raise ValueError(
                    f"SAE {self.name!r} expects inputs [..., {self.d_in}], "
                    f"got shape {list(x.shape)}"
                )
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., d_sae]`` (SAELens' ``hidden_pre``) for inputs ``[..., d_in]``.

        For topk SAEs with ``rescale_acts_by_decoder_norm`` the decoder-norm scaling is
        included, so ``encode(x) == activation(pre_activations(x))`` always holds. Inputs of
        ``hook_z`` SAEs may also be ``[..., n_heads, d_head]``.
        """
        sae_in = self._prepare_input(x)
        if self.dtype == torch.float32:
            # One GEMM with the bias as its initial value, not a matmul and then a pass over the
            # whole [N, d_sae] output to add it. (16-bit SAEs keep SAELens' two roundings.)
            flat = torch.addmm(self.b_enc, sae_in.reshape(-1, self.d_in), self.W_enc)
            hidden_pre = flat.reshape(*sae_in.shape[:-1], self.d_sae)
        else:
            hidden_pre = sae_in @ self.W_enc + self.b_enc
        if self.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        return hidden_pre

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Map pre-activations to dense features (ReLU, JumpReLU or TopK+ReLU)."""
        if self.architecture == "standard":
            return torch.relu(pre)
        if self.architecture == "jumprelu":
            # SAELens keeps the ReLU and multiplies by the mask: relu(pre) * (pre > threshold).
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        indices, values = self.activation_sparse(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def activation_sparse(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK only: ``(indices [..., k], values [..., k])`` for pre-activations ``pre``.

        Values are after the ReLU (so zeros are possible) and in no particular order; the
        selection is the one :meth:`activation` scatters. Raises ``NotImplementedError`` for
        other architectures.
        """
        if self.architecture != "topk":
            raise NotImplementedError(
                f"sparse activations are only defined for topk SAEs; SAE {self.name!r} "
                f"is {self.architecture!r} (use encode() for dense features)"
            )
        assert self.k is not None
        # sorted=False as in SAELens, so tie-breaking picks the same features.
        values, indices = torch.topk(pre, k=self.k, dim=-1, sorted=False)
        return indices, torch.relu(values)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense features ``[..., d_sae]`` for inputs ``[..., d_in]`` (cast to the SAE dtype)."""
        return self.activation(self.pre_activations(x))

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK only: the features of :meth:`encode` as ``(indices, values)``, each ``[..., k]``.

        ``indices`` is a LongTensor; values are after the ReLU (zeros possible). Raises
        ``NotImplementedError`` for standard/jumprelu SAEs, whose active count varies.
        """
        return self.activation_sparse(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[..., d_in]`` from dense features ``[..., d_sae]``.

        ``hook_z`` SAEs return the flattened ``[..., n_heads * d_head]`` form.
        """
        if self.rescale_acts_by_decoder_norm:
            f = f * (1 / self.W_dec.norm(dim=-1))
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x``: ``decode(encode(x))``."""
        return self.decode(self.encode(x))
