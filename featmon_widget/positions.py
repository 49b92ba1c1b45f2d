"""Token positions and padding per request, computed on the device without host reads."""

from __future__ import annotations

from collections import OrderedDict

import torch

Tensor = torch.Tensor

# Requests remembered for position continuation; older ones start again at 0 if they return.
MAX_TRACKED_REQUESTS = 4096


class RequestPositions:
    """Continues token positions across forward passes of one request, per batch row.

    A forward pass's attention mask may be longer than its tokens (a decode step with a KV cache
    passes the mask of the whole sequence so far): then the positions are the count of real
    tokens before each new token, read from that mask. Otherwise positions continue from where the
    request's previous forward ended.
    """

    def __init__(self) -> None:
        self._next: OrderedDict[str, Tensor] = OrderedDict()

    def clear(self) -> None:
        """Forget every request."""
        self._next.clear()

    def assign(self, request_id: str, batch: int, tokens: int, mask: Tensor | None,
               device: torch.device) -> tuple[Tensor, Tensor]:
        """Positions [batch, tokens] (int64) and validity [batch, tokens] (bool) of one forward.

        `mask` is [batch, L] with L >= tokens, nonzero for real tokens; its last `tokens` columns
        belong to this forward.
        """
        if mask is None:
            mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        else:
            mask = mask.to(device=device) != 0
        if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] < tokens:
            raise ValueError(
                f"mask must be [batch={batch}, >= tokens={tokens}], got {tuple(mask.shape)}"
            )
        seen = mask.to(torch.int64).cumsum(1)
        previous = self._next.get(request_id)
        if mask.shape[1] > tokens:
            # The mask covers the cached past too: it alone says where each new token sits.
            positions = seen[:, -tokens:] - 1
        else:
            if previous is None or previous.shape[0] != batch or previous.device != device:
                previous = torch.zeros(batch, dtype=torch.int64, device=device)
            positions = previous[:, None] + seen - 1
        self._next[request_id] = positions[:, -1] + 1 if tokens else seen[:, -1]
        self._next.move_to_end(request_id)
        while len(self._next) > MAX_TRACKED_REQUESTS:
            self._next.popitem(last=False)
        valid = mask[:, -tokens:] if tokens else mask[:, :0]
        return positions.clamp_min(0), valid
