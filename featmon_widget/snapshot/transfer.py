"""Device-to-host copies that do not hold up the compute stream's producer.

On CUDA the tensors are copied into pinned host buffers with non-blocking copies and only the
calling thread waits, on an event recorded after them; callers enqueue the copies while they
hold the monitor's lock and wait after releasing it, so a forward never queues behind a host
read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Tensor = torch.Tensor


def start_copy(tensors: Sequence[Tensor]) -> Callable[[], list[Tensor]]:
    """Enqueue copies of `tensors` to the host; call the result to wait for them."""
    if not tensors or tensors[0].device.type != "cuda":
        # CPU tensors: copy now (a clone, so later in-place updates cannot change the snapshot).
        copies = [t.detach().clone() if t.device.type == "cpu" else t.detach().cpu()
                  for t in tensors]
        return lambda: copies
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for dst, src in zip(host, tensors, strict=True):
        dst.copy_(src, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def wait() -> list[Tensor]:
        done.synchronize()
        return host

    return wait
