"""`dictionary_learning` (saprmarks/dictionary_learning) checkpoints: a folder with `ae.pt`
(the dictionary's state dict, read with `torch.load(weights_only=True)`) and `config.json`
(whose `trainer.dict_class` names the class).

Supported classes and how each maps onto a `SparseAutoencoder` (features equal the class's own
default `encode`):

- `AutoEncoder`: `relu(encoder(x - bias))` -> `standard`, `apply_b_dec_to_input`, b_dec = bias.
  Like the library's `from_pretrained`, a decoder whose columns are not unit-norm is normalized
  and the encoder rescaled to match (same reconstruction, features scaled by those norms).
- `JumpReluAutoEncoder`: `relu(pre * (pre > threshold))`, `pre = x @ W_enc + b_enc` ->
  `jumprelu` (its `apply_b_dec_to_input` is not saved; the class default, false, is used).
- `AutoEncoderTopK`: `topk(relu(encoder(x - b_dec)), k)` -> `topk`, `apply_b_dec_to_input`.
- `BatchTopKSAE`: at inference its `encode` keeps `relu(pre) > threshold` (one scalar learned
  in training) -> `jumprelu` with that threshold for every feature; a checkpoint whose threshold
  was never set (-1) keeps every positive value -> `standard`. The batch-wide top-k used in
  training depends on the other rows of a batch and is not a per-token encode.

Not supported (a ValueError names them): `GatedAutoEncoder`, `MatryoshkaBatchTopKSAE` (its
encode also zeroes inactive groups), `AutoEncoderNew`, `IdentityDict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .autoencoder import SparseAutoencoder
from .checkpoint_files import pick_tensors, read_config, read_state_dict

WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"
SUPPORTED = ("AutoEncoder", "JumpReluAutoEncoder", "AutoEncoderTopK", "BatchTopKSAE")


def is_dictionary_learning_folder(root: Path) -> bool:
    """Whether `root` holds a dictionary_learning checkpoint."""
    return (root / WEIGHTS_FILE).is_file()


def load_dictionary_learning(root: Path, device: torch.device, dtype: torch.dtype | None
                             ) -> SparseAutoencoder:
    """The dictionary in folder `root` as a `SparseAutoencoder`."""
    config = read_config(root / CONFIG_FILE) if (root / CONFIG_FILE).is_file() else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    state = read_state_dict(root / WEIGHTS_FILE)
    dict_class = trainer.get("dict_class") or _guess_class(state, root)
    where = str(root / WEIGHTS_FILE)
    if dict_class not in SUPPORTED:
        raise ValueError(f"{root / CONFIG_FILE}: dict_class {dict_class!r} is not supported "
                         f"(supported: {', '.join(SUPPORTED)})")
    build = {"AutoEncoder": _relu, "JumpReluAutoEncoder": _jumprelu,
             "AutoEncoderTopK": _topk, "BatchTopKSAE": _batch_topk}[dict_class]
    kwargs = build(state, where)
    layer, submodule = trainer.get("layer"), trainer.get("submodule_name")
    sae = SparseAutoencoder.from_tensors(
        **kwargs, name=root.resolve().name, device=device, dtype=dtype,
        hook_name=submodule if isinstance(submodule, str) else None)
    sae.cfg["metadata"].update(format="dictionary_learning", dict_class=dict_class,
                               reconstructs_input=True)
    if isinstance(trainer.get("lm_name"), str):
        sae.cfg["metadata"]["model_name"] = trainer["lm_name"]
    if isinstance(layer, int) and not isinstance(layer, bool):
        sae.cfg["metadata"]["layer"] = layer
    return sae


def _guess_class(state: dict[str, torch.Tensor], root: Path) -> str:
    """The class from the state dict's names, when `config.json` is missing."""
    keys = set(state)
    if {"W_enc", "threshold"} <= keys:
        return "JumpReluAutoEncoder"
    if {"encoder.weight", "decoder.weight", "bias"} <= keys:
        return "AutoEncoder"
    raise ValueError(f"{root}: without {CONFIG_FILE} the dictionary class cannot be told from "
                     f"its tensors {sorted(keys)} (TopK and BatchTopK save the same names)")


def _linear_dims(state: dict[str, torch.Tensor], where: str) -> tuple[int, int]:
    weight = state.get("encoder.weight")
    if weight is None or weight.dim() != 2:
        raise ValueError(f"{where}: no 2-D 'encoder.weight' (has {sorted(state)})")
    d_sae, d_in = (int(s) for s in weight.shape)
    return d_in, d_sae


def _relu(state: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    d_in, d_sae = _linear_dims(state, where)
    t = pick_tensors(state, {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                             "decoder.weight": (d_in, d_sae), "bias": (d_in,)}, where)
    encoder, bias, decoder = t["encoder.weight"], t["encoder.bias"], t["decoder.weight"]
    norms = torch.norm(decoder, dim=0)
    if not torch.allclose(norms, torch.ones_like(norms)):  # the library's own test and steps
        decoder = decoder / norms
        encoder = encoder * norms[:, None]
        bias = bias * norms
    return dict(W_enc=encoder.T, b_enc=bias, W_dec=decoder.T, b_dec=t["bias"],
                architecture="standard", apply_b_dec_to_input=True)


def _jumprelu(state: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    w_enc = state.get("W_enc")
    if w_enc is None or w_enc.dim() != 2:
        raise ValueError(f"{where}: no 2-D 'W_enc' (has {sorted(state)})")
    d_in, d_sae = (int(s) for s in w_enc.shape)
    t = pick_tensors(state, {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in),
                             "b_dec": (d_in,), "threshold": (d_sae,)}, where)
    return dict(W_enc=t["W_enc"], b_enc=t["b_enc"], W_dec=t["W_dec"], b_dec=t["b_dec"],
                threshold=t["threshold"], architecture="jumprelu")


def _topk_tensors(state: dict[str, torch.Tensor], where: str) -> tuple[dict[str, Any], int]:
    d_in, d_sae = _linear_dims(state, where)
    k = state.get("k")
    if k is None or k.numel() != 1 or k.is_floating_point() or not 1 <= int(k) <= d_sae:
        raise ValueError(f"{where}: 'k' must be one integer in 1..{d_sae}, got {k!r}")
    t = pick_tensors(state, {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                             "decoder.weight": (d_in, d_sae), "b_dec": (d_in,)}, where,
                     ignored=frozenset({"k", "threshold"}))
    weights = dict(W_enc=t["encoder.weight"].T, b_enc=t["encoder.bias"],
                   W_dec=t["decoder.weight"].T, b_dec=t["b_dec"], apply_b_dec_to_input=True)
    return weights, int(k)


def _topk(state: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    weights, k = _topk_tensors(state, where)
    return dict(weights, architecture="topk", k=k)


def _batch_topk(state: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    weights, _ = _topk_tensors(state, where)
    threshold = state.get("threshold")
    if threshold is None or threshold.numel() != 1 or not threshold.is_floating_point():
        raise ValueError(f"{where}: 'threshold' must be one float, got {threshold!r}")
    value = float(threshold)
    if value < 0:  # never calibrated: encode keeps every positive pre-activation
        return dict(weights, architecture="standard")
    d_sae = weights["b_enc"].shape[0]
    return dict(weights, architecture="jumprelu",
                threshold=torch.full((d_sae,), value, dtype=weights["b_enc"].dtype))
