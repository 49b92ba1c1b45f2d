"""The CPU kernel of the per-feature value distributions (`csrc/distributions.c`): one read of
dense features [N, F], counting each finite value into its feature's log bin or its inactive
count (see `record/distributions.py` for the bins)."""

from __future__ import annotations

import torch

from ...snapshot.value_bins import DIST_BINS
from .native import check_buffers
from .protocol import DENSE_DTYPES, CFunction, CFunctions
from .sample_probe import SampleProbe

Tensor = torch.Tensor

# Fewer values than this run on the calling thread only.
_THREADED = 1 << 18


class DistributionKernel:
    """Calls the compiled distribution kernel on CPU tensors, checking every buffer first."""

    C_FUNCTIONS = (
        CFunction("int", "featmon_distributions", (
            "const void *acts", "int dtype", "const uint8_t *valid", "int64_t n", "int64_t f",
            "float threshold", "void *counts", "int wide", "int threads")),
        CFunction("int", "featmon_distributions_sampled", (
            "const void *acts", "int dtype", "const uint8_t *valid", "int64_t n", "int64_t f",
            "float threshold", "void *counts", "int wide", "int threads",
            "const int64_t *token_key", "const int64_t *key", "int64_t e", "int32_t *cand",
            "int64_t per_part", "int64_t *found", "int64_t slots")),
    )

    def __init__(self, c: CFunctions) -> None:
        self.c = c

    def __call__(self, acts: Tensor, valid: Tensor | None, threshold: float,
                 counts: Tensor, probe: SampleProbe | None = None) -> None:
        """Add the rows of `acts` [N, F] (float32 / bfloat16 / float16, contiguous) where
        `valid` [N] (bool; None: every row) into `counts` [F, DIST_BINS] (int32 or int64).
        `threshold`: a float32 value, compared exactly (see `cofiring.floor_in`). With a
        `probe`, the same read also finds the sample's candidates into it (`SampleProbe`)."""
        n, f = acts.shape
        check_buffers(acts.dtype in DENSE_DTYPES and counts.shape == (f, DIST_BINS)
                      and counts.dtype in (torch.int32, torch.int64)
                      and (valid is None or (valid.dtype == torch.bool and valid.shape == (n,))),
                      acts, counts, *([] if valid is None else [valid]))
        threads = torch.get_num_threads() if acts.numel() >= _THREADED else 1
        head = (acts.data_ptr(), DENSE_DTYPES[acts.dtype],
                0 if valid is None else valid.data_ptr(), n, f, float(threshold),
                counts.data_ptr(), int(counts.dtype == torch.int64), threads)
        if probe is None:
            failed = self.c.featmon_distributions(*head)
        else:
            slots = probe.found.shape[0]
            check_buffers(probe.token_key.shape == (n,) and probe.token_key.dtype == torch.int64
                          and probe.key.dtype == torch.int64 and probe.key.dim() == 2
                          and probe.key.shape[0] == f and probe.key.shape[1] >= 1
                          and probe.cand.dtype == torch.int32 and probe.cand.dim() == 2
                          and probe.cand.shape[1] == 2 and probe.found.dtype == torch.int64
                          and slots >= threads and probe.cand.shape[0] >= slots,
                          probe.token_key, probe.key, probe.cand, probe.found)
            failed = self.c.featmon_distributions_sampled(
                *head, probe.token_key.data_ptr(), probe.key.data_ptr(), probe.key.shape[1],
                probe.cand.data_ptr(), probe.cand.shape[0] // slots, probe.found.data_ptr(),
                slots)
            probe.filled = True
        if failed:
            raise MemoryError("distribution kernel could not allocate its scratch")
