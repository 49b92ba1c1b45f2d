"""TopK values gathered into per-feature records between merges into the running statistics.

On the CPU, `running.RunningStats.update_sparse` hands each batch to the native kernel, which
folds it into one table against a fixed per-feature shift (the running mean when the table was
started). Turning the table into batch moments and merging them costs a pass over every feature,
so it happens only when statistics are read, before any other kind of update, when the threshold
changes, and every `FLUSH_ROWS` rows (so the shift keeps tracking the mean).
"""

from __future__ import annotations

import torch

from .moments import Moments, Totals, merge_moments_
from .native import SparseAccumulator
from .protocol import RECORD, RECORD_FIELDS

Tensor = torch.Tensor

FLUSH_ROWS = 1 << 16
# A record's fields, in the order the C kernel writes them (see protocol.RECORD_FIELDS).
STORED, NONFINITE, ACTIVE, ACTIVE_SUM, S1, S2, MIN, MAX = (
    RECORD_FIELDS.index(name) for name in
    ("stored", "nonfinite", "active", "active_sum", "s1", "s2", "min", "max"))
_EMPTY_RECORD = torch.zeros(RECORD, dtype=torch.float64).index_fill_(
    0, torch.tensor([MIN]), float("inf")).index_fill_(0, torch.tensor([MAX]), float("-inf"))


class PendingSparse:
    """One table of per-feature records [F + 2, 8]: F features, a padding sink, and a sink for
    out-of-range indices (their count is reported as dropped)."""

    def __init__(self, d_sae: int, accumulate: SparseAccumulator) -> None:
        self.d_sae = d_sae
        self._accumulate = accumulate
        self.table = torch.empty(d_sae + 2, RECORD, dtype=torch.float64)
        self.shift = torch.zeros(d_sae + 2, dtype=torch.float64)
        self.rows = torch.zeros(1, dtype=torch.float64)
        self.threshold = 0.0
        self.rows_held = 0  # an upper bound, known on the host: rows passed in since clear()
        self.clear()

    def clear(self) -> None:
        """Empty the table (one pass over it)."""
        self.table.copy_(_EMPTY_RECORD.expand_as(self.table))
        self.rows.zero_()
        self.rows_held = 0

    def merge_into(self, totals: Totals) -> Tensor:
        """Merge the table into the running `totals` in place and empty it, in one pass of the
        native kernel (bit for bit `merge_table`); the dropped count (int64 scalar)."""
        dropped = self._accumulate.merge_table(tuple(totals), self.table, self.rows,
                                               self.shift, self.threshold < 0.0)
        self.rows.zero_()
        self.rows_held = 0
        return torch.tensor(dropped, dtype=torch.int64)

    def start(self, shift: Tensor, threshold: float) -> None:
        """Begin a new table whose values are taken against `shift` [F] and `threshold`."""
        self.shift[: self.d_sae] = shift
        self.threshold = threshold

    def must_merge_before(self, rows: int, threshold: float) -> bool:
        """Whether the table must be merged before `rows` more rows judged by `threshold`."""
        return self.rows_held > 0 and (threshold != self.threshold
                                       or self.rows_held + rows > FLUSH_ROWS)

    def add(self, indices: Tensor, values: Tensor, valid: Tensor) -> None:
        """Fold `(indices, values)` [N, k] from rows where `valid` [N] is true."""
        if values.dtype not in (torch.float32, torch.float64):
            values = values.float()  # bf16 and fp16 are exact in float32
        self._accumulate(self.table, self.rows, self.shift, indices.to(torch.int64).contiguous(),
                         values.contiguous(), valid.to(torch.bool).contiguous(), self.threshold)
        self.rows_held += indices.shape[0]


def merge_table(state: Totals, table: Tensor, rows: Tensor, shift: Tensor,
                zero_is_active: bool) -> Tensor:
    """Merge a table of records (taken against `shift` [F + 2]) into the running totals
    `state` in place, and return the count of dropped indices (the out-of-range sink).
    The definition in torch operations; `PendingSparse.merge_into` runs the same arithmetic in
    one C pass (tested bit for bit against this)."""
    f = table.shape[0] - 2
    t = table[:f]
    stored = t[:, STORED].to(torch.int64)
    nonfinite = t[:, NONFINITE].to(torch.int64)
    count = rows.to(torch.int64) - nonfinite
    zeros = count - stored  # valid rows where the feature was an implicit 0
    zeros_f = zeros.to(torch.float64)
    s = shift[:f]
    active = t[:, ACTIVE].to(torch.int64)
    if zero_is_active:
        active = active + zeros
    has_zero = zeros > 0
    moments = Moments(
        count,
        nonfinite,
        active,
        t[:, ACTIVE_SUM],
        t[:, S1] - zeros_f * s,
        t[:, S2] + zeros_f * s * s,
        torch.where(has_zero, t[:, MIN].clamp_max(0.0), t[:, MIN]),
        torch.where(has_zero, t[:, MAX].clamp_min(0.0), t[:, MAX]),
    )
    merge_moments_(state, s, moments)
    return (table[f + 1, STORED] + table[f + 1, NONFINITE]).to(torch.int64)
