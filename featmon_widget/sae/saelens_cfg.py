"""The SAELens on-disk config (``cfg.json``): file names, dtypes, and the validation that reduces
a config to the settings that change ``encode`` / ``decode``.

Every setting whose semantics `SparseAutoencoder` does not implement raises a ``ValueError``
naming the key and value instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SUPPORTED_ARCHITECTURES = ("standard", "jumprelu", "topk")

# Written into saved configs: SAELens treats configs without a version >= 6 as legacy and
# rebuilds them (dropping the nested "metadata"), so we mark ours as the 6.x layout.
SAVED_CFG_VERSION = "6.0.0"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# Config keys SAELens (pre-6 layouts) may keep at top level instead of under "metadata".
METADATA_KEYS = (
    "model_name",
    "hook_name",
    "model_class_name",
    "hook_head_index",
    "model_from_pretrained_kwargs",
    "prepend_bos",
    "exclude_special_tokens",
    "neuronpedia_id",
    "context_size",
    "seqpos_slice",
    "dataset_path",
    "sae_lens_version",
    "sae_lens_training_version",
)


def parse_dtype(value: str | torch.dtype, key: str = "dtype") -> torch.dtype:
    """Map ``"float32"`` / ``"torch.float32"`` / ``torch.float32`` to a supported dtype."""
    if isinstance(value, torch.dtype):
        if value not in DTYPE_NAMES:
            raise ValueError(f"unsupported {key}={value!r}; expected one of {list(DTYPES)}")
        return value
    if isinstance(value, str):
        name = value.removeprefix("torch.")
        if name in DTYPES:
            return DTYPES[name]
    raise ValueError(f"unsupported {key}={value!r}; expected one of {list(DTYPES)}")


def is_legacy_cfg(cfg: Mapping[str, Any]) -> bool:
    """True for configs written before SAELens 6 (no version, or major version < 6)."""
    version = cfg.get("sae_lens_version")
    metadata = cfg.get("metadata")
    if not version and isinstance(metadata, Mapping):
        version = metadata.get("sae_lens_version")
    if not version:
        return True
    match = re.match(r"\s*v?(\d+)", str(version))
    if match is None:
        raise ValueError(f"cannot parse sae_lens_version={version!r} in the SAE config")
    return int(match.group(1)) < 6


def _require_int(cfg: Mapping[str, Any], key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"SAE config key {key!r} must be a positive integer, got {value!r}")
    return value


def _require_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"SAE config key {key!r} must be true or false, got {value!r}")
    return value


def normalise_cfg(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a raw SAELens config and reduce it to the settings that affect encode/decode.

    Mirrors SAELens' config defaulting (including the pre-6.0 layout conversion) and raises
    ``ValueError`` for every setting whose semantics this module does not implement.
    """
    cfg = dict(raw)
    legacy = is_legacy_cfg(cfg)
    metadata: dict[str, Any] = {}
    if isinstance(cfg.get("metadata"), Mapping):
        metadata.update(cfg["metadata"])
    if legacy:
        # SAELens < 6 names; SAELens renames them the same way when loading.
        if "hook_point" in cfg and "hook_name" not in cfg:
            cfg["hook_name"] = cfg["hook_point"]
        if "hook_point_head_index" in cfg and "hook_head_index" not in cfg:
            cfg["hook_head_index"] = cfg["hook_point_head_index"]
        if "activation_fn_str" in cfg and "activation_fn" not in cfg:
            cfg["activation_fn"] = cfg["activation_fn_str"]
    for key in METADATA_KEYS:
        if key in cfg and key not in metadata:
            metadata[key] = cfg[key]

    d_in = _require_int(cfg, "d_in")
    d_sae = _require_int(cfg, "d_sae")

    architecture = cfg.get("architecture")
    if architecture is None and legacy:
        architecture = "standard"
    activation_fn = cfg.get("activation_fn")
    k = cfg.get("k")
    if legacy and activation_fn == "topk":
        # Pre-6 TopK SAEs were "standard" with a topk activation and k in activation_fn_kwargs.
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError("SAE config's activation_fn_kwargs must be an object, got "
                             f"{type(kwargs).__name__}")
        if kwargs.get("k") is None:
            raise ValueError("SAE config has activation_fn='topk' but no activation_fn_kwargs['k']")
        architecture = "topk"
        k = kwargs["k"]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"unsupported SAE architecture={architecture!r}; "
            f"supported: {list(SUPPORTED_ARCHITECTURES)}"
        )
    if activation_fn not in (None, "relu") and not (
        architecture == "topk" and activation_fn == "topk"
    ):
        raise ValueError(
            f"unsupported SAE config activation_fn={activation_fn!r} for architecture "
            f"{architecture!r}; only 'relu' (or 'topk' for topk SAEs) is implemented"
        )

    normalize = cfg.get("normalize_activations", "none")
    if legacy and normalize in (None, False):
        normalize = "none"
    if normalize != "none":
        # SAELens either folds these into the weights when saving a finished SAE (then the cfg
        # says "none"), keeps the statistics outside the SAE directory, or makes decode
        # depend on the last encode call. None of that can be reproduced from the directory.
        raise ValueError(
            f"unsupported SAE config normalize_activations={normalize!r}; only 'none' is "
            "implemented (fold the normalisation into the weights first)"
        )

    hook_name = metadata.get("hook_name")
    if legacy and "reshape_activations" not in cfg:
        reshape_default = "hook_z" if "hook_z" in str(hook_name or "") else "none"
    else:
        reshape_default = "none"
    reshape = cfg.get("reshape_activations", reshape_default)
    if reshape not in ("none", "hook_z"):
        raise ValueError(
            f"unsupported SAE config reshape_activations={reshape!r}; expected 'none' or 'hook_z'"
        )

    if cfg.get("finetuning_scaling_factor"):
        raise ValueError(
            "unsupported SAE config finetuning_scaling_factor="
            f"{cfg['finetuning_scaling_factor']!r}; SAELens 6 does not support it either"
        )

    apply_b_dec = _require_bool(cfg.get("apply_b_dec_to_input", True), "apply_b_dec_to_input")
    rescale = _require_bool(
        cfg.get("rescale_acts_by_decoder_norm", False), "rescale_acts_by_decoder_norm"
    )
    if architecture == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
            raise ValueError(
                f"topk SAE config needs an integer k with 1 <= k <= d_sae={d_sae}, got k={k!r}"
            )
    else:
        if rescale:
            raise ValueError(
                "unsupported SAE config rescale_acts_by_decoder_norm=True for architecture "
                f"{architecture!r}; it is only defined for topk SAEs"
            )
        k = None

    return {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": parse_dtype(cfg.get("dtype", "float32")),
        "architecture": architecture,
        "k": k,
        "apply_b_dec_to_input": apply_b_dec,
        "rescale_acts_by_decoder_norm": rescale,
        "reshape_activations": reshape,
        "metadata": metadata,
    }


def expected_shapes(architecture: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "W_enc": (d_in, d_sae),
        "b_enc": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
    }
    if architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    return shapes


def check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...], where: str) -> None:
    if tuple(shape) != expected:
        raise ValueError(
            f"{where}: tensor {name!r} has shape {list(shape)}, expected {list(expected)}"
        )
