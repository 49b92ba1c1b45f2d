"""The CPU kernels aten and inductor have no good form for: the dense statistics reduction
streamed row by row in column tiles (`csrc/dense_moments.c`); each history row's top-k in one
ordered read (`csrc/row_topk.c`); fold a TopK SAE's (indices, values) into per-feature records
in a single pass (`csrc/sparse_accumulate.c`); and for the top-activating examples, each
sequence row's per-feature maximum streamed token by token and their merge into the kept
examples (`csrc/examples.c`).

Each wrapper declares the C functions it calls (`C_FUNCTIONS`: the header's prototypes and the
ctypes signatures come from them, see `protocol`) and checks every buffer before a call. They
are built, loaded and handed out by `backend`: the monitor's `Backend` decides which inputs
go to them; elsewhere, without a compiler, or with `native=False`, callers use the torch path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .moments import Moments, Totals
from .protocol import (
    ACT_JUMP,
    ACT_NONE,
    DENSE_DTYPES,
    EXAMPLE_KINDS,
    KIND_TOPK,
    RECORD,
    CFunction,
    CFunctions,
)
from .rider import StatisticsRider
from .sample_native import SampleKernels, check_buffers

Tensor = torch.Tensor


class RowMaxima(NamedTuple):
    """Per sequence row and feature ([rows, F] each): the largest finite value above the
    threshold among the row's valid tokens (float32, -inf where none), and the earliest token
    holding it (int64; 0 where none)."""

    value: Tensor
    token: Tensor


# Row maxima over fewer values than this run on the calling thread only.
_THREADED_ELEMENTS = 1 << 22
# Statistics over fewer values than this run on the calling thread only (a few hundred
# microseconds of work: more than waking torch's OpenMP workers costs).
_THREADED_STATISTICS = 1 << 18
# The example merges' parameters after the candidates (shared by both).
_MERGE_TAIL = ("int64_t tokens", "const int64_t *positions", "const int64_t *rank",
               "const int64_t *context", "const int64_t *source", "int64_t width",
               "const void *acts", "int kind", "const int64_t *indices", "int64_t k",
               "int64_t code", "float *value", "int64_t *request", "int32_t *row",
               "int32_t *position", "int32_t *window", "uint16_t *window_acts")


class SparseAccumulator:
    """Calls the compiled TopK kernels on CPU tensors, checking every buffer they will touch."""

    C_FUNCTIONS = (
        CFunction("void", "featmon_sparse_accumulate", (
            "const int64_t *idx", "const void *values", "int values_are_f64",
            "const uint8_t *valid", "int64_t n", "int64_t k", "int64_t f", "const double *shift",
            "double threshold", "double *acc", "double *rows")),
        CFunction("void", "featmon_drop_repeats", (
            "int64_t *idx", "int64_t n", "int64_t k", "int64_t f", "int64_t *stamp",
            "int64_t first_mark")),
        CFunction("int64_t", "featmon_merge_table", (
            "int64_t f", "double *table", "double rows", "const double *shift",
            "int zero_is_active", "int64_t *count", "int64_t *nan_count",
            "int64_t *active_count", "double *active_sum", "double *mean", "double *m2",
            "double *mn", "double *mx")),
    )

    def __init__(self, c: CFunctions) -> None:
        self.c = c

    def merge_table(self, totals: tuple[Tensor, ...], table: Tensor, rows: Tensor,
                    shift: Tensor, zero_is_active: bool) -> int:
        """`pending.merge_table` in one pass, the table emptied too; the dropped count."""
        f = table.shape[0] - 2
        count, nan_count, active_count, active_sum, mean, m2, mn, mx = totals
        if not (table.dtype == shift.dtype == rows.dtype == torch.float64
                and table.shape == (f + 2, RECORD) and shift.shape == (f + 2,)
                and rows.shape == (1,)
                and all(t.dtype == torch.int64 for t in (count, nan_count, active_count))
                and all(t.dtype == torch.float64 for t in (active_sum, mean, m2, mn, mx))
                and all(t.shape == (f,) for t in totals)
                and all(t.device.type == "cpu" and t.is_contiguous()
                        for t in (table, rows, shift, *totals))):
            raise ValueError("native merge got buffers of the wrong shape, dtype or layout")
        return int(self.c.featmon_merge_table(f, table.data_ptr(), float(rows[0]),
                                              shift.data_ptr(), int(zero_is_active),
                                              *(t.data_ptr() for t in totals)))

    def __call__(self, table: Tensor, rows: Tensor, shift: Tensor, indices: Tensor,
                 values: Tensor, valid: Tensor, threshold: float) -> None:
        """Fold `(indices, values)` [N, k] into `table` [F + 2, 8] and `rows` [1] in place."""
        f = table.shape[0] - 2
        n, k = indices.shape
        # The C code trusts these; a wrong one would read or write outside a buffer.
        if not (table.dtype == shift.dtype == rows.dtype == torch.float64
                and table.shape == (f + 2, RECORD) and shift.shape == (f + 2,)
                and rows.shape == (1,) and values.shape == (n, k) and valid.shape == (n,)
                and valid.dtype == torch.bool and indices.dtype == torch.int64
                and values.dtype in (torch.float32, torch.float64)
                and all(t.device.type == "cpu" and t.is_contiguous()
                        for t in (table, rows, shift, indices, values, valid))):
            raise ValueError("sparse accumulator got buffers of the wrong shape, dtype or layout")
        self.c.featmon_sparse_accumulate(indices.data_ptr(), values.data_ptr(),
                                         int(values.dtype == torch.float64), valid.data_ptr(),
                                         n, k, f, shift.data_ptr(), float(threshold),
                                         table.data_ptr(), rows.data_ptr())

    def drop_repeats(self, indices: Tensor, stamps: Tensor, first_mark: int) -> Tensor:
        """A copy of `indices` [N, k] where every repeat of a feature within a row (after its
        first occurrence) is -1. `stamps` [F] int64 is the caller's, kept between calls: rows
        are marked `first_mark + 1 ..` (so the caller adds N afterwards)."""
        out = indices.to(torch.int64, copy=True).contiguous()
        check_buffers(out.dim() == 2 and stamps.dtype == torch.int64 and stamps.dim() == 1,
                      out, stamps)
        self.c.featmon_drop_repeats(out.data_ptr(), out.shape[0], out.shape[1],
                                    stamps.shape[0], stamps.data_ptr(), first_mark)
        return out


class DenseMoments:
    """Calls the compiled dense statistics kernel on CPU tensors, checking every buffer."""

    C_FUNCTIONS = (
        CFunction("int", "featmon_dense_moments", (
            "void *acts", "int dtype", "const uint8_t *valid", "int64_t n", "int64_t f",
            "const double *shift", "double threshold", "int into_totals", "int64_t *count",
            "int64_t *nan_count", "int64_t *active_count", "double *active_sum",
            "double *s1_or_mean", "double *s2_or_m2", "double *min", "double *max",
            "int64_t tokens", "float *best",
            "int64_t *arg", "int act", "const float *jump", "int threads", "void *dist_counts",
            "int dist_wide", "const int64_t *token_key", "const int64_t *key", "int64_t e",
            "int32_t *cand", "int64_t per_part", "int64_t *found", "int64_t slots",
            "int32_t *row_l0", "const int64_t *top_pick", "int64_t top_m", "int64_t top_k",
            "float *top_val", "int32_t *top_idx")),
    )

    def __init__(self, c: CFunctions) -> None:
        self.c = c

    def __call__(self, acts: Tensor, valid: Tensor | None, shift: Tensor | None,
                 threshold: float, rider: StatisticsRider | None = None,
                 into: Totals | None = None) -> Moments | None:
        """`moments.batch_moments` of `acts` [N, F] (float32, bfloat16 or float16) over the
        rows where `valid` [N] is true (every row if None), against `shift` [F] float64; what
        `rider` asks is counted in the same pass (`StatisticsRider`). With `into` (running
        totals on the CPU) the moments are merged into them in the pass, tile by tile, as
        `moments.merge_moments_` would (bit for bit), and None is returned; `shift` may be None
        then: the pass takes `moments.shift_for` of those totals itself."""
        return self._run(acts, valid, shift, threshold, None, None, rider, into)[0]

    def with_row_maxima(self, acts: Tensor, valid: Tensor | None, shift: Tensor | None,
                        threshold: float, tokens: int | None, jump: Tensor | None = None,
                        rider: StatisticsRider | None = None, into: Totals | None = None
                        ) -> tuple[Moments | None, RowMaxima | None]:
        """The moments, and in the same pass each sequence's row maxima: `acts` holds
        sequences of `tokens` rows (None: no maxima); per sequence and feature the largest
        finite value above `threshold` among its valid rows (float32, -inf where none) and the
        earliest token holding it (int64, 0 where none) — `ExampleKernels.row_max`'s result.

        With `jump` [F] (float32), `acts` (float32) holds an SAE's pre-activations and is
        overwritten in place with `relu(acts) * (acts > jump)` (JumpReLU; -inf everywhere is a
        ReLU), whose moments and maxima these are. `rider`, `into`: as `__call__`."""
        return self._run(acts, valid, shift, threshold, tokens, jump, rider, into)

    def _run(self, acts: Tensor, valid: Tensor | None, shift: Tensor | None, threshold: float,
             tokens: int | None, jump: Tensor | None, rider: StatisticsRider | None,
             into: Totals | None) -> tuple[Moments | None, RowMaxima | None]:
        n, f = acts.shape
        outputs = list(into) if into is not None else fresh_moments(f)
        check_buffers(acts.dtype in DENSE_DTYPES
                      and (shift.dtype == torch.float64 and shift.shape == (f,)
                           if shift is not None else into is not None)
                      and (valid is None or (valid.dtype == torch.bool and valid.shape == (n,)))
                      and (tokens is None or (tokens >= 1 and n % tokens == 0))
                      and (jump is None or (jump.dtype == acts.dtype == torch.float32
                                            and jump.shape == (f,)))
                      and [t.dtype for t in outputs] == _MOMENT_DTYPES
                      and all(t.shape == (f,) for t in outputs),
                      acts, *outputs, *[t for t in (shift, valid, jump) if t is not None])
        batch = 0 if tokens is None else n // tokens
        best = torch.empty(batch, f, dtype=torch.float32)
        arg = torch.empty(batch, f, dtype=torch.int64)
        threads = torch.get_num_threads() if acts.numel() >= _THREADED_STATISTICS else 1
        status = self.c.featmon_dense_moments(
            acts.data_ptr(), DENSE_DTYPES[acts.dtype], 0 if valid is None else valid.data_ptr(),
            n, f, 0 if shift is None else shift.data_ptr(), float(threshold),
            int(into is not None),
            *[t.data_ptr() for t in outputs], tokens or 0,
            0 if tokens is None else best.data_ptr(), 0 if tokens is None else arg.data_ptr(),
            ACT_NONE if jump is None else ACT_JUMP, 0 if jump is None else jump.data_ptr(),
            threads, *StatisticsRider.kernel_args(rider, acts))
        if status < 0:
            raise MemoryError("dense statistics kernel could not allocate its tile buffers")
        if rider is not None:
            rider.note_ranked(status)
        moments = None if into is not None else Moments(*outputs)
        return moments, None if tokens is None else RowMaxima(best, arg)


def fresh_moments(f: int) -> list[Tensor]:
    """New buffers for one pass's `Moments` of `f` features (three counts, five sums)."""
    return [torch.empty(f, dtype=dtype) for dtype in _MOMENT_DTYPES]


_MOMENT_DTYPES = [torch.int64] * 3 + [torch.float64] * 5  # Moments' and Totals' fields


class RowTopK:
    """Calls the compiled per-row top-k kernel on CPU tensors, checking every buffer."""

    C_FUNCTIONS = (
        CFunction("void", "featmon_row_topk", (
            "const void *acts", "int is_bf16", "int64_t rows", "int64_t f", "const int64_t *pick",
            "int64_t m", "int64_t k", "float *val", "int32_t *idx", "int threads")),
    )

    def __init__(self, c: CFunctions) -> None:
        self.c = c

    def __call__(self, acts: Tensor, pick: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Rows `pick` [M] (int64) of `acts` [R, F] float32 or bfloat16: each one's `k` largest
        values, largest first (NaN above numbers, ties to the lower index), as (indices int32
        [M, k], values float32 [M, k]) — `torch.topk` over the gathered rows, without the gather."""
        rows, f = acts.shape
        m = pick.shape[0]
        check_buffers(acts.dtype in (torch.float32, torch.bfloat16) and pick.dtype == torch.int64
                      and pick.dim() == 1 and 1 <= k <= f, acts, pick)
        values = torch.empty(m, k, dtype=torch.float32)
        indices = torch.empty(m, k, dtype=torch.int32)
        threads = torch.get_num_threads() if m * f >= _THREADED_STATISTICS else 1
        self.c.featmon_row_topk(acts.data_ptr(), int(acts.dtype == torch.bfloat16), rows, f,
                                pick.data_ptr(), m, k,
                                values.data_ptr(), indices.data_ptr(), threads)
        return indices, values


class CoFiringKernel:
    """Calls the compiled co-firing kernel (csrc/cofiring.c) on CPU tensors, checking every
    buffer first."""

    C_FUNCTIONS = (
        CFunction("void", "featmon_cofire", (
            "const void *acts", "int is_bf16", "const uint8_t *valid", "int64_t n", "int64_t f",
            "const int64_t *sel", "int64_t s", "float threshold", "void *both", "int wide",
            "int32_t *own", "int threads")),
    )
    MAX_SELECTED = 64  # the kernel's bound on `sel`

    def __init__(self, c: CFunctions) -> None:
        self.c = c

    def __call__(self, acts: Tensor, valid: Tensor, sel: Tensor, features: tuple[int, ...],
                 threshold: float, both: Tensor, own: Tensor) -> None:
        """Add to `both` [S, F] (int32 or int64) the rows of `acts` [N, F] (float32 or
        bfloat16) where `valid`, per selected feature `sel` [S] (the `features`, checked on
        the host: no read of `sel`) active on them, and to `own` [F] int32 every active
        feature's count; active: value > `threshold` (a value of the input's type)."""
        n, f = acts.shape
        s = sel.shape[0]
        check_buffers(acts.dtype in (torch.float32, torch.bfloat16) and valid.shape == (n,)
                      and valid.dtype == torch.bool and sel.dtype == torch.int64
                      and sel.shape == (s,) and s <= self.MAX_SELECTED
                      and both.shape == (s, f) and both.dtype in (torch.int32, torch.int64)
                      and own.shape == (f,) and own.dtype == torch.int32
                      and len(features) == s and all(0 <= j < f for j in features),
                      acts, valid, sel, both, own)
        threads = torch.get_num_threads() if n * f >= _THREADED_STATISTICS else 1
        self.c.featmon_cofire(acts.data_ptr(), int(acts.dtype == torch.bfloat16),
                              valid.data_ptr(), n, f, sel.data_ptr(), s, threshold,
                              both.data_ptr(), int(both.dtype == torch.int64), own.data_ptr(),
                              threads)


class ExampleKernels(SampleKernels):
    """Calls the compiled example kernels (and the sample's, `sample_native`) on CPU tensors,
    checking every buffer first."""

    C_FUNCTIONS = (
        CFunction("void", "featmon_row_max", (
            "const void *acts", "int is_bf16", "const uint8_t *valid", "int64_t rows",
            "int64_t tokens", "int64_t f", "float threshold", "float *best", "int32_t *arg",
            "int threads")),
        CFunction("void", "featmon_examples_merge", (
            "int64_t f", "int64_t e", "int64_t span", "int64_t rows", "const float *cand_value",
            "const int64_t *cand_t", "int64_t b0", *_MERGE_TAIL)),
        CFunction("void", "featmon_examples_merge_list", (
            "int64_t n", "const int64_t *cand_feature", "const int64_t *cand_row",
            "const float *cand_value", "const int64_t *cand_t", "int64_t f", "int64_t e",
            "int64_t span", *_MERGE_TAIL)),
        *SampleKernels.C_FUNCTIONS,
    )

    def __init__(self, c: CFunctions) -> None:
        self.c = c

    def merge_list(self, feature: Tensor, row_of: Tensor, cand_value: Tensor, cand_t: Tensor,
                   tokens: int, positions: Tensor, rank: Tensor, context: Tensor,
                   source: Tensor, acts: Tensor, indices: Tensor, code: int, value: Tensor,
                   request: Tensor, row: Tensor, position: Tensor, window: Tensor,
                   window_acts: Tensor) -> None:
        """Merge a list of candidates (feature, row, value, token) [C], ordered by feature then
        row, of a TopK forward (`indices`, float32 `acts` [batch * tokens, k]) into the kept
        examples [F, E] in place."""
        n = feature.shape[0]
        f, e = value.shape
        span = window.shape[2]
        batch = rank.shape[0]
        check_buffers(feature.dtype == row_of.dtype == cand_t.dtype == positions.dtype
                      == rank.dtype == context.dtype == source.dtype == request.dtype
                      == indices.dtype == torch.int64
                      and cand_value.dtype == value.dtype == acts.dtype == torch.float32
                      and row.dtype == position.dtype == window.dtype == torch.int32
                      and window_acts.dtype == torch.bfloat16
                      and row_of.shape == cand_value.shape == cand_t.shape == (n,)
                      and acts.shape == indices.shape and indices.shape[0] == batch * tokens
                      and request.shape == row.shape == position.shape == (f, e)
                      and window.shape == window_acts.shape == (f, e, span)
                      and rank.shape == (batch, tokens) and positions.shape == (batch * tokens,)
                      and context.shape == source.shape and context.shape[0] == batch
                      and context.shape[1] >= tokens + span - 1
                      and (n == 0 or (int(feature.min()) >= 0 and int(feature.max()) < f
                                      and int(row_of.min()) >= 0 and int(row_of.max()) < batch
                                      and int(cand_t.min()) >= 0 and int(cand_t.max()) < tokens)),
                      feature, row_of, cand_value, cand_t, positions, rank, context, source, acts,
                      indices, value, request, row, position, window, window_acts)
        self.c.featmon_examples_merge_list(
            n, feature.data_ptr(), row_of.data_ptr(), cand_value.data_ptr(), cand_t.data_ptr(),
            f, e, span, tokens, positions.data_ptr(), rank.data_ptr(), context.data_ptr(),
            source.data_ptr(), context.shape[1], acts.data_ptr(), KIND_TOPK,
            indices.data_ptr(), indices.shape[1], code, value.data_ptr(), request.data_ptr(),
            row.data_ptr(), position.data_ptr(), window.data_ptr(), window_acts.data_ptr())

    def row_max(self, acts: Tensor, valid: Tensor, threshold: float) -> RowMaxima:
        """Per row of `acts` [rows, tokens, F] (float32 or bfloat16) and feature: the largest
        finite value above `threshold` among tokens where `valid` [rows, tokens] (float32, -inf
        where none), and the earliest token holding it (int64)."""
        rows, tokens, f = acts.shape
        check_buffers(acts.dtype in (torch.float32, torch.bfloat16) and valid.dtype == torch.bool
                      and valid.shape == (rows, tokens), acts, valid)
        best = torch.empty(rows, f, dtype=torch.float32)
        arg = torch.empty(rows, f, dtype=torch.int32)
        # As many threads as torch uses, for work worth starting them: a fresh thread can wait a
        # scheduler slice (milliseconds) behind torch's own spinning workers.
        threads = torch.get_num_threads() if acts.numel() >= _THREADED_ELEMENTS else 1
        self.c.featmon_row_max(acts.data_ptr(), int(acts.dtype == torch.bfloat16),
                               valid.data_ptr(), rows, tokens, f, float(threshold),
                               best.data_ptr(), arg.data_ptr(), threads)
        return RowMaxima(torch.where(arg >= 0, best, float("-inf")),
                         arg.clamp_min(0).to(torch.int64))

    def merge(self, cand_value: Tensor, cand_t: Tensor, b0: int, tokens: int,
              positions: Tensor, rank: Tensor, context: Tensor, source: Tensor,
              acts: Tensor, indices: Tensor | None, code: int, value: Tensor, request: Tensor,
              row: Tensor, position: Tensor, window: Tensor, window_acts: Tensor) -> None:
        """Merge candidates [rows, F] of rows b0.. into the kept examples [F, E] in place.
        `acts` is the forward's dense features [batch * tokens, F] (float32 or bfloat16), or
        with `indices` its TopK values [batch * tokens, k] (float32)."""
        rows, f = cand_value.shape
        e, span = window.shape[1], window.shape[2]
        batch = rank.shape[0]
        if indices is None:
            kind, k = EXAMPLE_KINDS.get(acts.dtype, -1), 0
            acts_ok = kind >= 0 and acts.shape == (batch * tokens, f)
        else:
            kind, k = KIND_TOPK, indices.shape[1]
            acts_ok = acts.dtype == torch.float32 and indices.dtype == torch.int64 \
                and acts.shape == indices.shape and indices.shape[0] == batch * tokens
        check_buffers(acts_ok and cand_value.dtype == value.dtype == torch.float32
                      and cand_t.dtype == positions.dtype == rank.dtype == context.dtype
                      == source.dtype == request.dtype == torch.int64
                      and row.dtype == position.dtype == window.dtype == torch.int32
                      and window_acts.dtype == torch.bfloat16
                      and cand_t.shape == (rows, f)
                      and value.shape == request.shape == row.shape == position.shape == (f, e)
                      and window.shape == window_acts.shape == (f, e, span)
                      and rank.shape == (batch, tokens) and positions.shape == (batch * tokens,)
                      and context.shape == source.shape and context.shape[0] == batch
                      and context.shape[1] >= tokens + span - 1
                      and b0 >= 0 and b0 + rows <= batch,
                      cand_value, cand_t, positions, rank, context, source, acts, value, request,
                      row, position, window, window_acts,
                      *([] if indices is None else [indices]))
        self.c.featmon_examples_merge(
            f, e, span, rows, cand_value.data_ptr(), cand_t.data_ptr(), b0, tokens,
            positions.data_ptr(), rank.data_ptr(), context.data_ptr(), source.data_ptr(),
            context.shape[1], acts.data_ptr(), kind, 0 if indices is None else indices.data_ptr(),
            k, code, value.data_ptr(), request.data_ptr(), row.data_ptr(), position.data_ptr(),
            window.data_ptr(), window_acts.data_ptr())

