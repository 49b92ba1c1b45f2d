"""The three ways features come in: dense activations, a TopK SAE's sparse (indices, values),
and a layer output encoded here by an SAE. Each is checked, given positions, folded into the
running statistics and recorded. Callers hold the monitor's lock; nothing here reads a value
back to the host.
"""

from __future__ import annotations

from typing import Any

import torch

from ...sae.adapter import flatten_heads, has_sparse_encode, is_own_sae
from ..oversight.health import HEALTH_TOKENS, reconstruct
from ..stats.fused import FusedEncoder
from .features import DenseFeatures, RepeatFilter, SparseFeatures
from .positions import batch_tokens
from .recording import Recording

Tensor = torch.Tensor


def check_dense(acts: Any, d_sae: int) -> None:
    """Raise TypeError/ValueError unless `acts` is a tensor [..., d_sae]."""
    if not isinstance(acts, Tensor):
        raise TypeError(f"acts must be a torch.Tensor, got {type(acts).__name__}")
    if acts.is_complex() or acts.dtype == torch.bool:
        raise TypeError(f"acts must be real numbers, got {acts.dtype}")
    if acts.dim() == 0 or acts.shape[-1] != d_sae:
        raise ValueError(f"acts must be [..., d_sae={d_sae}], got {tuple(acts.shape)}")


def check_sparse(indices: Any, values: Any) -> None:
    """Raise TypeError/ValueError unless `indices` and `values` are tensors of one shape
    [..., k] and `indices` holds integers."""
    for name, t in (("indices", indices), ("values", values)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if indices.shape != values.shape or indices.dim() == 0:
        raise ValueError(f"indices {tuple(indices.shape)} and values "
                         f"{tuple(values.shape)} must have one shape [..., k]")
    if indices.dtype.is_floating_point or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"indices must be integers, got {indices.dtype}")
    if values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"values must be real numbers, got {values.dtype}")


def check_token_ids(token_ids: Any, batch: int, tokens: int) -> Tensor | None:
    """`token_ids` as a flat int64 [batch * tokens], or a TypeError/ValueError naming it."""
    if token_ids is None:
        return None
    if not isinstance(token_ids, Tensor):
        raise TypeError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
    if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
        raise TypeError(f"token_ids must be integers, got {token_ids.dtype}")
    if token_ids.numel() != batch * tokens or token_ids.shape[-1] != tokens:
        raise ValueError(f"token_ids of shape {tuple(token_ids.shape)} do not fit {batch} "
                         f"sequence(s) of {tokens} token(s)")
    return token_ids.reshape(-1)


def _fitting_token_ids(token_ids: Tensor | None, batch: int, tokens: int) -> Tensor | None:
    """Token ids captured by a hook, if they are this layer's tokens (else unknown)."""
    try:
        check_token_ids(token_ids, batch, tokens)
    except (TypeError, ValueError):
        return None
    return token_ids


class Ingest:
    """Feeds one `Recording` (see module doc)."""

    def __init__(self, recording: Recording, fused: FusedEncoder) -> None:
        self.recording = recording
        self.fused = fused
        self.repeats = RepeatFilter(recording.d_sae, recording.backend)

    def dense(self, acts: Tensor, request_id: str, positions: Tensor | None,
              mask: Tensor | None, token_ids: Tensor | None = None) -> None:
        """Record features `acts` [..., d_sae] (checked with `check_dense`)."""
        rec = self.recording
        batch, tokens = batch_tokens(acts.shape[:-1])
        token_ids = check_token_ids(token_ids, batch, tokens)
        if batch * tokens == 0:
            return  # nothing to record (after the checks: bad input is still an error)
        rec.adopt_device(acts.device)
        acts = acts.to(rec.device, non_blocking=True)
        codes = rec.request_codes(request_id)  # before the merge: a failure changes nothing
        pos, valid = rec.positions_for(request_id, batch, tokens, positions, mask)
        flat = acts.reshape(batch * tokens, rec.d_sae)
        rider = rec.stats_rider(valid)
        # Without a mask every row counts, and the kernel can skip a select per value.
        maxima = rec.stats.update(flat, None if mask is None else valid, rec.config.threshold,
                                  rec.examples.row_maxima_wanted(batch, tokens), rider)
        rec.record(DenseFeatures(flat, rec.backend), valid, pos, batch, tokens, request_id,
                   token_ids, maxima, codes, rider)

    def sparse(self, indices: Tensor, values: Tensor, request_id: str,
               positions: Tensor | None, mask: Tensor | None,
               token_ids: Tensor | None = None, position_ids: Tensor | None = None,
               encoded_by: tuple[Any, Tensor] | None = None
               ) -> tuple[SparseFeatures, Tensor] | None:
        """Record a TopK SAE's `indices`, `values` [..., k] (checked with `check_sparse`);
        `encoded_by`: the (SAE, layer output) they came from, for the health sample. Returns
        the features and the real-token flags recorded (None when empty)."""
        rec = self.recording
        batch, tokens = batch_tokens(indices.shape[:-1])
        token_ids = check_token_ids(token_ids, batch, tokens)
        if batch * tokens == 0:
            return None  # nothing to record
        rec.adopt_device(values.device)
        codes = rec.request_codes(request_id)  # before the merge: a failure changes nothing
        pos, valid = rec.positions_for(request_id, batch, tokens, positions, mask, position_ids)
        k = indices.shape[-1]
        flat = self.repeats(indices.to(rec.device).reshape(batch * tokens, k))
        features = SparseFeatures(flat, values.to(rec.device).reshape(batch * tokens, k),
                                  rec.d_sae)
        sample = None if encoded_by is None else self._health_sample(*encoded_by, features)
        rec.stats.update_sparse(features.indices, features.values, valid, rec.config.threshold)
        rec.record(features, valid, pos, batch, tokens, request_id, token_ids, codes=codes)
        self._observe(sample, valid)
        return features, valid

    def encoded(self, sae: Any, x: Tensor, request_id: str, mask: Tensor | None,
                position_ids: Tensor | None, token_ids: Tensor | None = None) -> None:
        """Encode a layer output `x` [..., d_in] with `sae` and record it. Our own SAE class
        runs encode and statistics as one fused step (`stats.fused`); our TopK SAEs record
        sparsely.
        `token_ids` that do not fit the layer's tokens are ignored (the tokens are unknown)."""
        rec = self.recording
        x = flatten_heads(sae, x)
        batch, tokens = batch_tokens(x.shape[:-1])
        if batch * tokens == 0:
            return  # a 0-token forward: nothing to encode or record
        token_ids = _fitting_token_ids(token_ids, batch, tokens)
        if has_sparse_encode(sae):
            # A TopK SAE's output is k values per token: record it without densifying.
            rec.adopt_device(x.device)
            x = x.to(rec.device, non_blocking=True)
            indices, values = sae.encode_sparse(x)
            self.sparse(indices, values, request_id, None, mask, token_ids, position_ids,
                        encoded_by=(sae, x))
            return
        rec.adopt_device(x.device)
        x = x.to(rec.device, non_blocking=True)
        codes = rec.request_codes(request_id)  # before the merge: a failure changes nothing
        pos, valid = rec.positions_for(request_id, batch, tokens, None, mask, position_ids)
        rows = None if mask is None and position_ids is None else valid  # None: all rows
        local = rec.stats.local  # shifts come from this process's own totals
        # The health sample's decode comes after the statistics pass and may raise: on those
        # forwards the pass counts into staged counts, added once the forward is recorded, and
        # its moments are merged afterwards; on the others it merges them as it goes.
        due = rec.health.is_due(rec.config.health_every)
        rider = rec.stats_rider(valid, staged=due)
        encoded = self.fused(sae, x, rows, local.mean, local.count,
                             rec.config.threshold, fuse=is_own_sae(sae),
                             tokens=rec.examples.row_maxima_wanted(batch, tokens), rider=rider,
                             into=None if due else local)
        flat = encoded.features
        # Checked before anything is merged: a failed batch changes nothing.
        if flat.shape != (batch * tokens, rec.d_sae):
            raise ValueError(f"the SAE's encode gave features of shape {tuple(flat.shape)} for "
                             f"{batch * tokens} token(s); expected ({batch * tokens}, "
                             f"{rec.d_sae})")
        features = DenseFeatures(flat, rec.backend)
        sample = self._health_sample(sae, x, features)
        rec.stats.merge(encoded.shift, encoded.moments)
        rec.record(features, valid, pos, batch, tokens, request_id,
                   check_token_ids(token_ids, batch, tokens), encoded.maxima, codes, rider)
        self._observe(sample, valid)

    def _health_sample(self, sae: Any, x: Tensor, features: DenseFeatures | SparseFeatures
                       ) -> tuple[Tensor, Tensor, slice] | None:
        """On a forward the health check samples, the SAE's reconstruction of a bounded part of
        it and that part of its input (before anything is merged: a decode that raises changes
        nothing); None on other forwards or when the SAE cannot reconstruct its input."""
        rec = self.recording
        if not rec.health.is_due(rec.config.health_every):
            return None
        # The decode is the cost: at most HEALTH_TOKENS token slots, spread evenly over the
        # forward (every sequence and position, not only the first sequence's start).
        rows = slice(0, None, -(-features.n // HEALTH_TOKENS))
        some = (DenseFeatures(features.acts[rows]) if isinstance(features, DenseFeatures) else
                SparseFeatures(features.indices[rows], features.values[rows], features.d_sae))
        x_hat = reconstruct(sae, some)
        if x_hat is None or x_hat.shape != (some.n, x.shape[-1]):
            return None
        return x.reshape(features.n, -1)[rows], x_hat, rows

    def _observe(self, sample: tuple[Tensor, Tensor, slice] | None, valid: Tensor) -> None:
        """Fold a health sample into the reconstruction sums, once its forward is recorded."""
        if sample is not None:
            x, x_hat, rows = sample
            self.recording.health.observe_reconstruction(x, x_hat, valid[rows])
