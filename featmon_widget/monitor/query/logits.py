"""What a feature promotes: `Logits` answers `get_logits` and `set_unembedding`.

A feature's logit effects are `W_dec[feature] @ W_U` over the vocabulary: its decoder direction
read out by the model's unembedding, without the final layer norm (the SAEDashboard convention;
see `LogitsResponse`). They are computed in float32 on the SAE's device (the unembedding
converted there a block of tokens at a time, so a large vocabulary is never copied whole), for
one feature when asked, never on the hot path, and kept: a small LRU of the top and bottom
`MAX_LOGITS_K` tokens and the histogram per feature, valid for one SAE and one unembedding
(a new `attach`, `set_unembedding` or SAE clears it). Snapshot panels read the same cache.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, NamedTuple

import numpy as np
import torch

from ...checks import check_int
from ...sae.adapter import decoder_weight
from ...types import LogitsResponse, LogitToken
from ..attachments import Attachments
from .unembedding import SET_UNEMBEDDING, check_unembedding, find_unembedding

MAX_LOGITS_K = 100  # top / bottom tokens `get_logits` may list (and the cache keeps)
LOGITS_BINS = 50  # equal-width bins of the histogram over the vocabulary
LOGITS_CACHE_SIZE = 64  # features whose logits are kept (at least the 8 selected ones)
VOCAB_BLOCK = 16_384  # tokens of the unembedding converted to float32 at a time


class FeatureLogits(NamedTuple):
    """One feature's cached logit effects, on the host: top / bottom token ids and values
    (`MAX_LOGITS_K` or the vocabulary, if smaller), histogram edges and counts."""

    top_ids: list[int]
    top_values: list[float]
    bottom_ids: list[int]
    bottom_values: list[float]
    edges: list[float]
    counts: list[int]


def logit_values(row: torch.Tensor, w_u: torch.Tensor) -> torch.Tensor:
    """`row @ w_u` in float32 on `row`'s device: `row` [d_model], `w_u` [d_model, vocab]
    (any dtype or device; converted a block of `VOCAB_BLOCK` tokens at a time)."""
    row = row.to(torch.float32)
    vocab = w_u.shape[1]
    values = torch.empty(vocab, dtype=torch.float32, device=row.device)
    for start in range(0, vocab, VOCAB_BLOCK):
        block = w_u[:, start:start + VOCAB_BLOCK].to(device=row.device, dtype=torch.float32)
        values[start:start + VOCAB_BLOCK] = row @ block
    return values


def feature_logits(row: torch.Tensor, w_u: torch.Tensor, k: int = MAX_LOGITS_K,
                   bins: int = LOGITS_BINS) -> FeatureLogits:
    """The top / bottom `k` tokens of `row @ w_u` (ties to the lower id) and its histogram:
    `bins` equal-width bins from the lowest value to the highest (numpy's edges
    `linspace(lo, hi, bins + 1)`; lo - 0.5 .. hi + 0.5 when all are equal, as numpy does),
    counted as `numpy.histogram` counts with those edges. ValueError if a value is not finite."""
    values = logit_values(row, w_u)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("the logit effects are not all finite (NaN or Inf in W_dec or W_U)")
    k = min(k, values.numel())
    down, up = _highest(values, k), _highest(-values, k)
    lo, hi = (float(v) for v in torch.aminmax(values))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = _bin_counts(values, edges)
    return FeatureLogits(down.tolist(), values[down].tolist(), up.tolist(), values[up].tolist(),
                         edges.tolist(), counts.tolist())


def _highest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest `values`, highest first, ties to the lower index: `topk`
    finds the k-th value, every index at or above it is taken in index order and sorted
    stably (O(vocab), not a sort of the vocabulary)."""
    kth = torch.topk(values, k, sorted=False).values.min()
    candidates = torch.nonzero(values >= kth).flatten()  # ascending index
    order = torch.sort(values[candidates], descending=True, stable=True).indices
    return candidates[order[:k]]


def _bin_counts(values: torch.Tensor, edges: np.ndarray) -> torch.Tensor:
    """`numpy.histogram(values, edges)` counts for equal-width `edges` spanning the values:
    bin `i` holds `edges[i] <= v < edges[i + 1]` (the last bin closed). The bin is computed by
    arithmetic, then moved one bin where it disagrees with the edges themselves (float64)."""
    bins = len(edges) - 1
    v = values.to(torch.float64)
    edge_t = torch.from_numpy(edges).to(v.device)
    index = ((v - edges[0]) * (bins / (edges[-1] - edges[0]))).floor_().long().clamp_(0, bins - 1)
    index -= (v < edge_t[index]).long()
    index += ((v >= edge_t[index + 1]) & (index < bins - 1)).long()
    return torch.bincount(index.clamp_(0, bins - 1), minlength=bins)


class _Source(NamedTuple):
    """What logits are computed from: the decoder rows [d_sae, d_in] on the SAE's device, the
    unembedding [d_model, vocab] and its source name."""

    w_dec: torch.Tensor
    w_u: torch.Tensor
    name: str


class Logits:
    """Answers `get_logits` / `set_unembedding` for one monitor (see module doc), given its
    `lock` (held only to read the attachment) and its `attached` SAE, model and tokenizer.
    Computations take this object's own lock, never the monitor's: forwards go on."""

    def __init__(self, lock: threading.RLock, attached: Attachments, d_sae: int) -> None:
        self._lock = lock
        self._attached = attached
        self._d_sae = d_sae
        self._compute_lock = threading.Lock()
        self._given: torch.Tensor | None = None
        self._given_version = 0
        self._context: tuple[int, ...] | None = None  # what the cache was computed from
        self._sae: Any = None
        self._name = ""  # the unembedding's source, for the cached features
        self._cache: collections.OrderedDict[int, FeatureLogits] = collections.OrderedDict()

    def set_unembedding(self, w_u: torch.Tensor | None) -> None:
        """Use `w_u` [d_model, vocab] for every feature's logits (`None`: find it on the
        attached model again); a bad matrix raises ValueError and changes nothing."""
        checked = None if w_u is None else check_unembedding(w_u)
        with self._compute_lock:
            self._given = checked
            self._given_version += 1

    def get_logits(self, feature: int, k: int = 10) -> LogitsResponse:
        """`feature`'s top and bottom `k` tokens and its histogram (see `LogitsResponse`)."""
        check_int("feature", feature, 0, self._d_sae - 1)
        check_int("k", k, 1, MAX_LOGITS_K)
        return self.responses([feature], k, strict=True)[feature]

    def responses(self, features: list[int], k: int,
                  strict: bool = False) -> dict[int, LogitsResponse]:
        """`LogitsResponse`s of checked `features`, from the cache where it has them. With
        `strict`, a feature that cannot have logits raises ValueError; otherwise it is left
        out (snapshots: no unembedding, no panel part)."""
        with self._lock:
            sae, model = self._attached.sae, self._attached.model
            count, text_of = self._attached.attach_count, self._attached.text_of()
        out = {}
        with self._compute_lock:
            context = (count, self._given_version, id(sae))
            if context != self._context or sae is not self._sae:
                self._cache.clear()
                self._context, self._sae, self._name = context, sae, ""
            source: _Source | None = None
            for feature in features:
                try:
                    found = self._cache.get(feature)
                    if found is None:
                        source = source or self._source(sae, model)
                        found = feature_logits(source.w_dec[feature], source.w_u)
                        self._cache[feature], self._name = found, source.name
                        if len(self._cache) > LOGITS_CACHE_SIZE:
                            self._cache.popitem(last=False)
                    self._cache.move_to_end(feature)
                except Exception:
                    if strict:
                        raise
                    continue
                out[feature] = _response(feature, found, k, text_of, self._name)
        return out

    def cached(self) -> tuple[int, ...]:
        """The features whose logits are kept now, least recently used first."""
        with self._compute_lock:
            return tuple(self._cache)

    def _source(self, sae: Any, model: Any) -> _Source:
        """The decoder and unembedding logits are computed from, checked (the caller holds the
        compute lock)."""
        if sae is None:
            raise ValueError("get_logits needs an SAE: attach one (monitor.attach(model, "
                             "hook_point, sae)) or build the monitor with FeatureMonitor.for_sae")
        w_dec = decoder_weight(sae)
        if self._given is not None:
            w_u, name = self._given, SET_UNEMBEDDING
        elif model is None:
            raise ValueError("get_logits needs an unembedding: attach a model "
                             "(monitor.attach(model, hook_point)) or give W_U [d_model, vocab] "
                             "with monitor.set_unembedding(W_U)")
        else:
            w_u, name = find_unembedding(model)
        d_in, d_model = int(w_dec.shape[1]), int(w_u.shape[0])
        if d_in != d_model:
            hint = " (W_U looks transposed: pass W_U.T)" if w_u.shape[1] == d_in else ""
            raise ValueError(f"the SAE's d_in={d_in} differs from the unembedding's "
                             f"d_model={d_model} ({name}, shape {tuple(w_u.shape)}){hint}")
        return _Source(w_dec, w_u, name)


def _response(feature: int, found: FeatureLogits, k: int, text_of: Any,
              source: str) -> LogitsResponse:
    def tokens(ids: list[int], values: list[float]) -> list[LogitToken]:
        return [LogitToken(i, text_of(i), v) for i, v in zip(ids[:k], values[:k], strict=True)]

    return LogitsResponse(feature=feature, top=tokens(found.top_ids, found.top_values),
                          bottom=tokens(found.bottom_ids, found.bottom_values),
                          edges=list(found.edges), counts=list(found.counts), source=source)
