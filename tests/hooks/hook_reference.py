"""Shared by the model-hook tests: tiny models' constants, SAE-like objects, `Capture` (our own
forward hooks, the independent reference) and the assertions that compare a monitor with it.

Everything is built from tiny configs with random weights (no downloads). Every test compares
recorded values against a reference computed independently: our own forward hooks capture what
the model forward receives and what the hooked layer returns, the SAE encodes that, and numpy
(float64) reduces it. Most tests use the eager statistics path (FEATMON_COMPILE=0); one test
covers the compiled, fused encode + statistics path with our SparseAutoencoder.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from featmon_widget import FeatureMonitor, SparseAutoencoder

D_MODEL = 32
D_SAE = 48
VOCAB = 100
PAD = 0
GPT2_HOOK = "transformer.h.1"
TL_HOOK = "blocks.0.hook_resid_post"
NEW_TOKENS = 5
# Row 0 of the generate prompt is left-padded with this many pad tokens.
LEFT_PADS = 2
PROMPT_LEN = 6


def _sae_weights(d_in: int, d_sae: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * 0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.3 - 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.1,
        "b_dec": torch.zeros(d_in),
    }


class ForeignSAE(nn.Module):
    """An SAE-like object that is not ours: only `encode` and `d_sae`."""

    def __init__(self, d_in: int, d_sae: int, seed: int = 1) -> None:
        super().__init__()
        w = _sae_weights(d_in, d_sae, seed)
        self.W_enc = nn.Parameter(w["W_enc"], requires_grad=False)
        self.b_enc = nn.Parameter(w["b_enc"], requires_grad=False)
        self.d_sae = d_sae

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


class ExplodingSAE:
    d_sae = D_SAE

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the sae exploded")


def make_sae(kind: str, d_in: int = D_MODEL, d_sae: int = D_SAE, seed: int = 1) -> Any:
    if kind == "ours":
        return SparseAutoencoder.from_tensors(**_sae_weights(d_in, d_sae, seed))
    if kind == "foreign":
        return ForeignSAE(d_in, d_sae, seed)
    raise AssertionError(kind)


class Capture:
    """Our own hooks: the attention mask each model forward receives and the layer's output."""

    def __init__(self, model: nn.Module, layer: str, positional_mask: bool = False) -> None:
        self.positional_mask = positional_mask
        self.masks: list[torch.Tensor | None] = []
        self.outputs: list[torch.Tensor] = []
        self._handles = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),
            model.get_submodule(layer).register_forward_hook(self._post),
        ]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask", args[1] if self.positional_mask else None)
        self.masks.append(mask.detach().clone() if mask is not None else None)

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self.outputs.append(hidden.detach().clone())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def valid(self, i: int) -> torch.Tensor:
        """[batch, tokens] bool: which tokens of layer call `i` are real (not padding)."""
        batch, tokens = self.outputs[i].shape[:2]
        mask = self.masks[i] if i < len(self.masks) else None
        if mask is None:
            return torch.ones(batch, tokens, dtype=torch.bool)
        return mask[:, -tokens:] != 0

    def real_tokens(self) -> int:
        return sum(int(self.valid(i).sum()) for i in range(len(self.outputs)))

    def features(self, sae: Any, calls: range | None = None
                 ) -> tuple[np.ndarray, dict[tuple[int, int], torch.Tensor]]:
        """Reference features of the real tokens of layer calls `calls` (default all): a
        float64 [N, d_sae] array, and per (row, position) the feature vector, positions counting
        the real tokens of each row in the order the model saw them."""
        rows: list[torch.Tensor] = []
        by_pos: dict[tuple[int, int], torch.Tensor] = {}
        seen: dict[int, int] = defaultdict(int)
        with torch.no_grad():
            for i in calls if calls is not None else range(len(self.outputs)):
                out = self.outputs[i]
                feats = sae.encode(out)  # same call shape as the monitor: bit-identical
                valid = self.valid(i)
                rows.append(feats[valid])
                for b in range(out.shape[0]):
                    for t in range(out.shape[1]):
                        if valid[b, t]:
                            by_pos[(b, seen[b])] = feats[b, t]
                            seen[b] += 1
        return torch.cat(rows).double().numpy(), by_pos


def hook_counts(model: nn.Module, layer: str) -> tuple[int, int, int]:
    sub = model.get_submodule(layer)
    return len(model._forward_pre_hooks), len(model._forward_hooks), len(sub._forward_hooks)


def assert_statistics_match(monitor: FeatureMonitor, ref: np.ndarray, *, exact: bool = True,
                            threshold: float = 0.0) -> None:
    rel, abs_ = (1e-9, 1e-12) if exact else (1e-5, 1e-6)
    n = ref.shape[0]
    stats = monitor.get_statistics(list(range(ref.shape[1])))
    assert stats.total_activations == n
    assert monitor.state.total_tokens == n
    assert [f.feature_idx for f in stats.features] == list(range(ref.shape[1]))
    partly_active = 0
    for fs in stats.features:
        col = ref[:, fs.feature_idx]
        active = col > threshold
        assert fs.count == n
        assert fs.nan_count == 0
        assert fs.active_count == int(active.sum())
        assert fs.active_ratio == pytest.approx(active.mean(), rel=1e-12)
        assert fs.mean == pytest.approx(col.mean(), rel=rel, abs=abs_)
        assert fs.std == pytest.approx(col.std(ddof=1), rel=rel, abs=abs_)
        if exact:
            assert fs.min == col.min()
            assert fs.max == col.max()
        else:
            assert fs.min == pytest.approx(col.min(), rel=rel, abs=abs_)
            assert fs.max == pytest.approx(col.max(), rel=rel, abs=abs_)
        if active.any():
            assert fs.mean_active == pytest.approx(col[active].mean(), rel=rel, abs=abs_)
        else:
            assert fs.mean_active is None
        partly_active += 0 < active.sum() < n
    # The test data must exercise both sides of the threshold.
    assert partly_active >= D_SAE // 4


def assert_records_match(records: list, by_pos: dict[tuple[int, int], torch.Tensor],
                         exact: bool = True, top_k: int = 10) -> None:
    """Every record holds the top-k (above 0) of the reference token at its (row, position)."""
    tol = {"rel": 0, "abs": 0} if exact else {"rel": 1e-5, "abs": 1e-6}
    for rec in records:
        feats = by_pos[(rec.row, rec.token_position)].float()
        vals, idx = torch.topk(feats, top_k)
        expected = [(int(i), float(v)) for i, v in zip(idx, vals, strict=True) if v > 0]
        assert [f for f, _ in rec.top_k] == [f for f, _ in expected]
        for (_, got), (_, want) in zip(rec.top_k, expected, strict=True):
            assert got == pytest.approx(want, **tol)
        for f, v in rec.activations.items():
            assert v == pytest.approx(float(feats[f]), **tol)


def positions_by_row(records: list) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for rec in records:
        out[rec.row].append(rec.token_position)
    return {row: sorted(pos) for row, pos in out.items()}


def check_monitored_run(model: nn.Module, hook_point: str, sae: Any, run: Any,
                        reference: torch.Tensor, *, positions: dict[int, list[int]],
                        real_tokens: int, positional_mask: bool = False) -> None:
    """Run `run()` with a monitor hooked at `hook_point`: the output equals `reference`, and
    the records (positions, values) and statistics match our own capture of the layer."""
    monitor = FeatureMonitor(D_SAE, compile=False)
    capture = Capture(model, hook_point, positional_mask=positional_mask)
    try:
        with monitor.attach(model, hook_point, sae), torch.no_grad():
            out = run()
    finally:
        capture.remove()
    assert torch.equal(out, reference)
    records = monitor.get_history(limit=1000).records
    assert positions_by_row(records) == positions
    ref, by_pos = capture.features(sae)
    assert ref.shape[0] == real_tokens
    assert_records_match(records, by_pos)
    assert_statistics_match(monitor, ref)


def generate(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kw: Any) -> Any:
    return model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                          pad_token_id=PAD, **kw)


class TinyLayer(nn.Module):
    def __init__(self, output: str) -> None:
        super().__init__()
        self.linear = nn.Linear(D_MODEL, D_MODEL)
        self.output = output

    def forward(self, h: torch.Tensor) -> Any:
        out = h + torch.tanh(self.linear(h))
        if self.output == "tensor":
            return out
        if self.output == "tuple":
            return out, torch.zeros(())
        if self.output == "list":
            return [out, None]
        return {"hidden": out}


class TinyEncoder(nn.Module):
    """A BERT-style encoder whose layers return `output` ("tensor", "tuple", "list", "dict")."""

    def __init__(self, output: str) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.layers = nn.ModuleList([TinyLayer(output) for _ in range(2)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        h = self.embed(input_ids)
        for layer in self.layers:
            out = layer(h)
            h = out if isinstance(out, torch.Tensor) else (
                out["hidden"] if isinstance(out, dict) else out[0])
            if attention_mask is not None and attention_mask.dim() == 2:
                h = h * attention_mask[..., None]
        return h


def right_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(11))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = PAD
    return ids, mask


class FakeTokenizer:
    """Anything with `decode(ids)` names tokens."""

    def decode(self, ids: list[int]) -> str:
        return f"<tok{ids[0]}>"
