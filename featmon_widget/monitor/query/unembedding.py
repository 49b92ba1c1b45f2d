"""Where a model's unembedding `W_U` [d_model, vocab] is: what `get_logits` multiplies a
feature's decoder direction with.

Looked up on the attached torch module (an nnsight model's inner module), in this order:

- TransformerLens: `model.W_U` [d_model, vocab] (source "W_U");
- HF with an LM head: `get_output_embeddings().weight` [vocab, d_model] (source "output
  embeddings"; tied or not);
- HF without output embeddings whose config ties word embeddings (an encoder such as BERT or
  the demo's MiniLM, whose pretraining head was tied to its input embeddings):
  `get_input_embeddings().weight` (source "input embeddings (tied)").

A matrix given with `monitor.set_unembedding(W_U)` wins over all of them (source
"set_unembedding"). Every result is a view of the model's own weight (no copy).
"""

from __future__ import annotations

from typing import Any

import torch

SET_UNEMBEDDING = "set_unembedding"
TRANSFORMERLENS = "W_U"
OUTPUT_EMBEDDINGS = "output embeddings"
TIED_INPUT_EMBEDDINGS = "input embeddings (tied)"


def check_unembedding(w_u: Any) -> torch.Tensor:
    """`w_u` as a detached 2-D floating tensor [d_model, vocab], or a ValueError naming what is
    wrong with it (its orientation is checked against the SAE when logits are computed)."""
    if not isinstance(w_u, torch.Tensor):
        raise ValueError(f"W_U must be a torch.Tensor [d_model, vocab], got {type(w_u).__name__}")
    if w_u.dim() != 2 or min(w_u.shape) < 1:
        raise ValueError(f"W_U must be a 2-D tensor [d_model, vocab], got shape "
                         f"{tuple(w_u.shape)}")
    if not w_u.is_floating_point():
        raise ValueError(f"W_U must hold floating-point values, got {w_u.dtype}")
    if w_u.device.type == "meta":
        raise ValueError("W_U is on the meta device: it holds no values")
    return w_u.detach()


def find_unembedding(model: torch.nn.Module) -> tuple[torch.Tensor, str]:
    """`model`'s unembedding [d_model, vocab] and where it came from (see module doc); a
    ValueError saying what was looked for when the model has none."""
    w_u = _tensor(getattr(model, "W_U", None))
    if w_u is not None:
        return w_u, TRANSFORMERLENS
    weight = _tensor(getattr(_call(model, "get_output_embeddings"), "weight", None))
    if weight is not None:
        return weight.T, OUTPUT_EMBEDDINGS
    config = getattr(model, "config", None)
    tied = getattr(config, "tie_word_embeddings", None)
    weight = _tensor(getattr(_call(model, "get_input_embeddings"), "weight", None))
    if weight is not None and tied is not False:
        return weight.T, TIED_INPUT_EMBEDDINGS
    why = ("its config says its word embeddings are not tied" if weight is not None
           else "it has no W_U, output embeddings or input embeddings")
    raise ValueError(f"no unembedding found on the attached {type(model).__name__} ({why}): "
                     f"give one with monitor.set_unembedding(W_U), W_U [d_model, vocab]")


def _call(model: torch.nn.Module, name: str) -> Any:
    method = getattr(model, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except (NotImplementedError, AttributeError):
        return None


def _tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor) and value.dim() == 2 and value.is_floating_point():
        return value.detach()
    return None
