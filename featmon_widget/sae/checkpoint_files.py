"""Reading other libraries' SAE checkpoints safely: a JSON config, and named tensors checked
against the shapes the config implies (nothing is unpickled; `.pt` state dicts are read with
`torch.load(weights_only=True)`, which accepts tensors and plain containers only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .saelens_cfg import check_shape

# Larger than any config; a file beyond this is not one.
MAX_CONFIG_BYTES = 16 << 20


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or a ValueError naming the file."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{str(path)!r} is larger than {MAX_CONFIG_BYTES} bytes: not an SAE "
                         f"config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from e
    except RecursionError as e:
        raise ValueError(f"{str(path)!r} is nested too deeply to be an SAE config") from e
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(config).__name__}")
    return config


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in a safetensors file, on the CPU."""
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read safetensors file {str(path)!r}: {e}") from e


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `torch.save`d state dict, read with `weights_only=True` (no arbitrary unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain data
        raise ValueError(f"cannot read {str(path)!r} as a state dict of tensors "
                         f"(weights_only): {type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of named tensors")
    return dict(state)


def pick_tensors(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                 where: str, ignored: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The `expected` tensors, each checked for its shape and a float dtype; a ValueError names
    a missing, unexpected (not in `ignored`) or malformed one."""
    unexpected = sorted(set(tensors) - set(expected) - ignored)
    if unexpected:
        raise ValueError(f"{where}: unexpected tensors {unexpected} (expected "
                         f"{sorted(expected)})")
    out = {}
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"{where}: missing tensor {name!r} (file has {sorted(tensors)})")
        t = tensors[name]
        check_shape(name, tuple(t.shape), shape, where)
        if not t.is_floating_point():
            raise ValueError(f"{where}: tensor {name!r} has non-float dtype {t.dtype}")
        out[name] = t
    return out


def positive_int(config: Mapping[str, Any], key: str, where: str) -> int:
    """`config[key]` as a positive int, or a ValueError naming it."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key!r} must be a positive int, got {value!r}")
    return value
