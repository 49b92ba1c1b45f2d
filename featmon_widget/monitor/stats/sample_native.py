"""The C side of the sample of activating tokens (`record/samples.py`): its two functions
live in `csrc/examples.c` beside the top examples' (they share its record writer), and
`native.ExampleKernels` calls them through this mixin. `check_buffers` guards every C call of
the kernels."""

from __future__ import annotations

from typing import Any

import torch

from .protocol import EXAMPLE_KINDS, CFunction
from .sample_probe import SampleProbe

Tensor = torch.Tensor

# Calls over fewer values than this run on the calling thread only.
_THREADED = 1 << 18
# The sample kernels' parameters after the threshold and slot count (shared by both).
_SAMPLE_TAIL = ("int64_t span", "int64_t tokens", "const int64_t *positions",
                "const int64_t *rank", "const int64_t *context", "const int64_t *source",
                "int64_t width", "int64_t code", "int64_t *key", "float *value",
                "int64_t *request", "int32_t *row", "int32_t *position", "int32_t *window",
                "uint16_t *window_acts")


class SampleKernels:
    """The sample's C functions (a mixin of `native.ExampleKernels`, which holds `c`)."""

    c: Any
    C_FUNCTIONS = (
        CFunction("void", "featmon_sample_dense", (
            "const void *acts", "int kind", "const uint8_t *valid", "const int64_t *token_key",
            "int64_t n", "int64_t f", "float threshold", "int64_t e", *_SAMPLE_TAIL,
            "int threads")),
        CFunction("void", "featmon_sample_fused", (
            "const int64_t *found", "int64_t parts", "int64_t per_part", "const int32_t *cand",
            "const void *acts", "int kind", "const uint8_t *valid", "const int64_t *token_key",
            "int64_t n", "int64_t f", "float threshold", "int64_t e", *_SAMPLE_TAIL,
            "int threads")),
        CFunction("void", "featmon_sample_sparse", (
            "const int64_t *indices", "const float *values", "int64_t k",
            "const uint8_t *valid", "const int64_t *token_key", "int64_t n", "int64_t f",
            "float threshold", "int64_t e", *_SAMPLE_TAIL)),
    )

    def sample(self, acts: Tensor, indices: Tensor | None, valid: Tensor, token_key: Tensor,
               threshold: float, tokens: int, positions: Tensor, rank: Tensor,
               context: Tensor, source: Tensor, code: int, key: Tensor, value: Tensor,
               request: Tensor, row: Tensor, position: Tensor, window: Tensor,
               window_acts: Tensor, probe: SampleProbe | None = None) -> None:
        """Fold one forward into the sample of activating tokens (`record/samples.py`) in
        place: dense `acts` [N, F] (float32 or bfloat16), or with `indices` a TopK forward's
        float32 values [N, k]; `valid`, `token_key` [N]; the kept `key` [F, E] ascending and
        the records as the top examples keep them (`merge` names the window arguments).
        A dense forward with a filled `probe` (its candidates from the statistics pass, for
        this `token_key` and `key`) is folded from the candidates, without reading `acts`
        again (the same kept set; its own pass where the probe's buffer overflowed)."""
        f, e = key.shape
        span = window.shape[2]
        n, batch = valid.shape[0], rank.shape[0]
        if indices is None:
            kind = EXAMPLE_KINDS.get(acts.dtype, -1)
            acts_ok = kind >= 0 and acts.shape == (n, f)
        else:
            acts_ok = (acts.dtype == torch.float32 and indices.dtype == torch.int64
                       and acts.shape == indices.shape and indices.shape[0] == n)
        check_buffers(acts_ok and valid.dtype == torch.bool and token_key.shape == (n,)
                      and token_key.dtype == positions.dtype == rank.dtype == context.dtype
                      == source.dtype == request.dtype == key.dtype == torch.int64
                      and value.dtype == torch.float32 and window_acts.dtype == torch.bfloat16
                      and row.dtype == position.dtype == window.dtype == torch.int32
                      and value.shape == request.shape == row.shape == position.shape == (f, e)
                      and window.shape == window_acts.shape == (f, e, span) and e >= 1
                      and n == batch * tokens and rank.shape == (batch, tokens)
                      and positions.shape == (n,) and context.shape == source.shape
                      and context.shape[0] == batch and context.shape[1] >= tokens + span - 1,
                      acts, valid, token_key, positions, rank, context, source, key, value,
                      request, row, position, window, window_acts,
                      *([] if indices is None else [indices]))
        tail = (span, tokens, positions.data_ptr(), rank.data_ptr(), context.data_ptr(),
                source.data_ptr(), context.shape[1], code, key.data_ptr(), value.data_ptr(),
                request.data_ptr(), row.data_ptr(), position.data_ptr(), window.data_ptr(),
                window_acts.data_ptr())
        if indices is None:
            threads = torch.get_num_threads() if acts.numel() >= _THREADED else 1
            if probe is not None and probe.filled:
                slots = probe.found.shape[0]
                check_buffers(probe.token_key is token_key and probe.key is key
                              and probe.cand.dtype == torch.int32
                              and probe.cand.shape == (probe.cand.shape[0], 2)
                              and probe.found.dtype == torch.int64
                              and probe.cand.shape[0] % slots == 0, probe.cand, probe.found)
                self.c.featmon_sample_fused(probe.found.data_ptr(), slots,
                                            probe.cand.shape[0] // slots, probe.cand.data_ptr(),
                                            acts.data_ptr(), kind, valid.data_ptr(),
                                            token_key.data_ptr(), n, f, threshold, e, *tail,
                                            threads)
                return
            self.c.featmon_sample_dense(acts.data_ptr(), kind, valid.data_ptr(),
                                        token_key.data_ptr(), n, f, threshold, e, *tail,
                                        threads)
        else:
            self.c.featmon_sample_sparse(indices.data_ptr(), acts.data_ptr(), indices.shape[1],
                                         valid.data_ptr(), token_key.data_ptr(), n, f,
                                         threshold, e, *tail)


def check_buffers(ok: bool, *tensors: Tensor) -> None:
    """Raise unless `ok` and every tensor is a contiguous CPU buffer: the C code trusts them,
    and a wrong one would read or write outside a buffer."""
    if not (ok and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)):
        raise ValueError("native kernel got buffers of the wrong shape, dtype or layout")
