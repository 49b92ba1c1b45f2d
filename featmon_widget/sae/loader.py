"""`load_sae`: read an SAE folder in the format its files show — SAELens, EleutherAI sparsify
or dictionary_learning — through safetensors (or a weights-only `torch.load` for formats that
ship a `.pt` state dict), never a full unpickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .autoencoder import SparseAutoencoder
from .dictionary_learning_format import is_dictionary_learning_folder, load_dictionary_learning
from .saelens_cfg import (
    CFG_FILENAME,
    WEIGHTS_FILENAME,
    check_shape,
    expected_shapes,
    normalise_cfg,
    parse_dtype,
)
from .sparsify_format import is_sparsify_folder, load_sparsify, sparsify_hook_points


def load_sae(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> SparseAutoencoder:
    """Load the SAE in folder `path`, its format told from its files:

    - SAELens: ``cfg.json`` + ``sae_weights.safetensors``;
    - EleutherAI sparsify: ``cfg.json`` + ``sae.safetensors`` (one folder per hook point; a run
      folder holding several is refused with their names);
    - dictionary_learning: ``ae.pt`` + ``config.json``.

    Args:
        path: the SAE directory.
        device: where to put the weights (default CPU, as SAELens' ``load_from_disk``).
        dtype: weight dtype (default: the config's ``dtype`` (SAELens), else the weights').

    Raises:
        FileNotFoundError: the directory is missing, or holds no SAE of a known format (the
            message lists what it holds), or a SAELens config or weights file is missing.
        ValueError: an unsupported architecture or setting, a malformed config, or missing,
            unexpected or wrongly shaped tensors.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"SAE directory not found: {str(root)!r}")
    target_device = torch.device(device) if device is not None else torch.device("cpu")
    target_dtype = None if dtype is None else parse_dtype(dtype)
    if not (root / WEIGHTS_FILENAME).is_file():
        if is_sparsify_folder(root):
            return load_sparsify(root, target_device, target_dtype)
        if is_dictionary_learning_folder(root):
            return load_dictionary_learning(root, target_device, target_dtype)
        hook_points = sparsify_hook_points(root)
        if hook_points:
            shown = ", ".join(hook_points[:8]) + (", ..." if len(hook_points) > 8 else "")
            raise ValueError(f"{str(root)!r} is a sparsify run with SAEs for {len(hook_points)} "
                             f"hook point(s) ({shown}): load one of them, e.g. "
                             f"load_sae({str(root / hook_points[0])!r})")
        if not (root / CFG_FILENAME).is_file():
            found = sorted(p.name for p in root.iterdir())[:12]
            raise FileNotFoundError(
                f"no SAE found in {str(root)!r}: expected SAELens ({CFG_FILENAME} + "
                f"{WEIGHTS_FILENAME}), sparsify (cfg.json + sae.safetensors) or "
                f"dictionary_learning (ae.pt + config.json); it holds {found}")
    return _load_saelens(root, target_device, dtype)


def _load_saelens(root: Path, target_device: torch.device,
                  dtype: str | torch.dtype | None) -> SparseAutoencoder:
    cfg_path = root / CFG_FILENAME
    weights_path = root / WEIGHTS_FILENAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"SAE config file not found: {str(cfg_path)!r}")
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"SAE weights file not found: {str(weights_path)!r} "
            "(only safetensors weights are loaded, never pickle/.pt files)"
        )
    try:
        with open(cfg_path) as f:
            raw_cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(cfg_path)!r} is not valid JSON: {e}") from e
    except RecursionError as e:  # nesting deeper than the parser recurses: not a config
        raise ValueError(f"{str(cfg_path)!r} is nested too deeply to be an SAE config") from e
    if not isinstance(raw_cfg, dict):
        raise ValueError(f"{str(cfg_path)!r} must hold a JSON object, got {type(raw_cfg).__name__}")

    spec = normalise_cfg(raw_cfg)
    target_dtype = spec["dtype"] if dtype is None else parse_dtype(dtype)
    expected = expected_shapes(spec["architecture"], spec["d_in"], spec["d_sae"])
    where = str(weights_path)

    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            # Older JumpReLU training checkpoints store log(threshold); SAELens converts too.
            log_threshold = (
                spec["architecture"] == "jumprelu"
                and "threshold" not in keys
                and "log_threshold" in keys
            )
            # SAELens drops an all-ones "scaling_factor" (a no-op) and rejects any other.
            allowed = set(expected) | {"scaling_factor"}
            if log_threshold:
                allowed.add("log_threshold")
            unexpected = sorted(keys - allowed)
            if unexpected:
                raise ValueError(
                    f"{where}: unexpected tensors {unexpected} for a {spec['architecture']!r} "
                    f"SAE (expected {sorted(expected)})"
                )
            for tname, shape in expected.items():
                src = "log_threshold" if tname == "threshold" and log_threshold else tname
                if src not in keys:
                    raise ValueError(
                        f"{where}: missing tensor {tname!r} for a {spec['architecture']!r} "
                        f"SAE (file has {sorted(keys)})"
                    )
                check_shape(src, tuple(f.get_slice(src).get_shape()), shape, where)
                t = f.get_tensor(src)
                if not t.is_floating_point():
                    raise ValueError(f"{where}: tensor {src!r} has non-float dtype {t.dtype}")
                t = t.to(target_dtype)
                if src == "log_threshold":
                    t = torch.exp(t)
                tensors[tname] = t
            if "scaling_factor" in keys:
                scale = f.get_tensor("scaling_factor")
                if not torch.allclose(scale, torch.ones_like(scale)):
                    raise ValueError(
                        f"{where}: tensor 'scaling_factor' is not all ones; "
                        "finetuning scaling factors are not supported"
                    )
    except SafetensorError as e:
        raise ValueError(f"cannot read safetensors file {where!r}: {e}") from e

    tensors = {n: t.to(target_device).contiguous() for n, t in tensors.items()}
    return SparseAutoencoder(
        tensors["W_enc"],
        tensors["b_enc"],
        tensors["W_dec"],
        tensors["b_dec"],
        architecture=spec["architecture"],
        threshold=tensors.get("threshold"),
        k=spec["k"],
        apply_b_dec_to_input=spec["apply_b_dec_to_input"],
        rescale_acts_by_decoder_norm=spec["rescale_acts_by_decoder_norm"],
        reshape_activations=spec["reshape_activations"],
        cfg=raw_cfg,
        name=root.resolve().name,
    )
