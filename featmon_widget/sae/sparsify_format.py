"""EleutherAI `sparsify` checkpoints: one folder per hook point holding `cfg.json` (a
`SparseCoderConfig` plus `d_in`) and `sae.safetensors` (a `SparseCoder`'s weights).

sparsify encodes `topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias), k)`; that equals a
SAELens-style TopK SAE with `apply_b_dec_to_input` (top-k then ReLU keeps the same positive
values). Transcoders (`transcode: true`) encode the same way without subtracting `b_dec`, from
the module's *input*: hook them on the layer whose output feeds that module. Their decoder, and
a `skip_connection`'s `W_skip`, predict the module's output, not the input, so
`cfg["metadata"]["reconstructs_input"]` is false for them. The `groupmax` activation is not
supported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .autoencoder import SparseAutoencoder
from .checkpoint_files import pick_tensors, positive_int, read_config, read_safetensors

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def is_sparsify_folder(root: Path) -> bool:
    """Whether `root` holds one sparsify SAE."""
    return (root / CFG_FILE).is_file() and (root / WEIGHTS_FILE).is_file()


def sparsify_hook_points(root: Path) -> list[str]:
    """The hook points of a sparsify run folder (its subfolders that hold an SAE)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_sparsify_folder(p))


def load_sparsify(root: Path, device: torch.device, dtype: torch.dtype | None
                  ) -> SparseAutoencoder:
    """The sparsify SAE in folder `root` as a `SparseAutoencoder`."""
    where = str(root / CFG_FILE)
    cfg = read_config(root / CFG_FILE)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise ValueError(f"{where}: activation {activation!r} is not supported (only 'topk'; "
                         f"'groupmax' encodes differently)")
    d_in, k = positive_int(cfg, "d_in", where), positive_int(cfg, "k", where)
    weights = read_safetensors(root / WEIGHTS_FILE)
    encoder = weights.get("encoder.weight")
    if encoder is None or encoder.dim() != 2:
        raise ValueError(f"{root / WEIGHTS_FILE}: no 2-D 'encoder.weight' (file has "
                         f"{sorted(weights)})")
    d_sae = int(encoder.shape[0])
    latents = cfg.get("num_latents") or d_in * positive_int(cfg, "expansion_factor", where)
    if latents != d_sae:
        raise ValueError(f"{where}: the config gives {latents} latents, the weights {d_sae}")
    if k > d_sae:
        raise ValueError(f"{where}: k={k} is larger than the {d_sae} latents")
    skip = bool(cfg.get("skip_connection", False))
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if skip:
        expected["W_skip"] = (d_in, d_in)
    t = pick_tensors(weights, expected, str(root / WEIGHTS_FILE))
    transcoder = bool(cfg.get("transcode", False))
    sae = SparseAutoencoder.from_tensors(
        t["encoder.weight"].T, t["encoder.bias"], t["W_dec"], t["b_dec"], architecture="topk",
        k=k, apply_b_dec_to_input=not transcoder, name=root.resolve().name,
        hook_name=root.resolve().name, device=device, dtype=dtype)
    sae.cfg["metadata"].update(format="sparsify", transcoder=transcoder,
                               reconstructs_input=not (transcoder or skip))
    return sae
