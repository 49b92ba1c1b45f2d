"""Token positions and padding per request, computed on the device without host reads."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ...checks import cut
from .registry import (
    MAX_COUNT,
    Event,
    Spec,
    StatePart,
    check_range,
    keyed_load,
    keyed_specs,
    keyed_tensors,
)
from .requests import automatic_number

Tensor = torch.Tensor

# Requests remembered for position continuation; older ones start again at 0 if they return.
MAX_TRACKED_REQUESTS = 4096


class RequestPositions(StatePart):
    """Continues token positions across forward passes of one request, per batch row.

    A forward pass's attention mask may be longer than its tokens (a decode step with a KV cache
    passes the mask of the whole sequence so far): then the positions are the count of real
    tokens before each new token, read from that mask. Otherwise positions continue from where the
    request's previous forward ended.
    """

    name = "positions"

    def __init__(self) -> None:
        self._next: OrderedDict[str, Tensor] = OrderedDict()
        self._journal: list[tuple[str, Tensor | None]] | None = None
        self.device = torch.device("cpu")  # where loaded positions go (the recording's)

    # ---- StatePart: saved (one tensor per request), forgotten by a history clear, local,
    # not counted in the memory figures -----------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """Each tracked request's next positions, as `<i>` (the ids are in `state_meta`)."""
        return keyed_tensors(self._next, "")

    def state_meta(self) -> dict[str, Any]:
        """The tracked request ids, least recently used first."""
        return {"requests": list(self._next)}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """Only the request ids."""
        if set(meta) != {"requests"}:
            raise ValueError(f"expected the tracked request ids, got {cut(repr(meta), 80)}")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """One int64 [rows] per request."""
        return keyed_specs(meta["requests"], "", Spec((None,), torch.int64))

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Positions in 0..`MAX_COUNT`."""
        for name in tensors:
            check_range(self.name, tensors, name, 0, MAX_COUNT)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Track the saved requests (on this monitor's device)."""
        self.tracked = keyed_load(tensors, "", meta["requests"], self.device)

    def reset_on(self, event: Event) -> None:
        """A history clear forgets every request."""
        if event is Event.HISTORY:
            self.clear()

    def memory_bytes(self) -> dict[str, int]:
        """Not counted (a few int64 per tracked request)."""
        return {}

    def clear(self) -> None:
        """Forget every request."""
        self._next.clear()

    @property
    def tracked(self) -> OrderedDict[str, Tensor]:
        """Each request's next positions ([rows] int64), least recently used first. Replace it
        whole, never change it in place."""
        return self._next

    @tracked.setter
    def tracked(self, tracked: OrderedDict[str, Tensor]) -> None:
        self._next = OrderedDict(tracked)

    @contextmanager
    def kept_on_error(self) -> Iterator[None]:
        """Positions assigned inside the block are undone if it raises: a failed call changes
        no request's positions. (A journal of the entries changed, not a copy of them all.)"""
        journal: list[tuple[str, Tensor | None]] = []
        self._journal = journal
        try:
            yield
        except BaseException:
            for request_id, old in reversed(journal):
                if old is None:
                    self._next.pop(request_id, None)
                else:
                    self._next[request_id] = old
            raise
        finally:
            self._journal = None

    def assign(self, request_id: str, batch: int, tokens: int, mask: Tensor | None,
               device: torch.device, absolute: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Positions [batch, tokens] (int64) and validity [batch, tokens] (bool) of one forward.

        `mask` is [batch, L] with L >= tokens, nonzero for real tokens; its last `tokens` columns
        belong to this forward. `absolute` ([batch or 1, tokens]) are the model's own position
        ids (HF `generate` passes them): tokens at a position this request already recorded
        are a re-feed (generation without a KV cache) and are not valid again.
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
        if previous is not None and (previous.shape[0] != batch or previous.device != device):
            previous = None
        if absolute is not None:
            return self._assign_absolute(request_id, batch, tokens, mask, absolute, previous)
        if mask.shape[1] > tokens:
            # The mask covers the cached past too: it alone says where each new token sits.
            positions = seen[:, -tokens:] - 1
        else:
            if previous is None:
                previous = torch.zeros(batch, dtype=torch.int64, device=device)
            positions = previous[:, None] + seen - 1
        self._remember(request_id, positions[:, -1] + 1 if tokens else seen[:, -1])
        valid = mask[:, -tokens:] if tokens else mask[:, :0]
        return positions.clamp_min(0), valid

    def _assign_absolute(self, request_id: str, batch: int, tokens: int, mask: Tensor,
                         absolute: Tensor, previous: Tensor | None) -> tuple[Tensor, Tensor]:
        fits = absolute.dim() == 2 and absolute.shape[1] == tokens
        if not fits or absolute.shape[0] not in (1, batch):
            raise ValueError(f"position ids must be [{batch} or 1, {tokens}], "
                             f"got {tuple(absolute.shape)}")
        positions = absolute.to(device=mask.device, dtype=torch.int64).expand(batch, tokens)
        valid = mask[:, -tokens:]
        if previous is not None:
            valid = valid & (positions >= previous[:, None])
        else:
            previous = torch.zeros(batch, dtype=torch.int64, device=mask.device)
        reached = torch.where(valid, positions + 1, 0).amax(1) if tokens else previous
        self._remember(request_id, torch.maximum(previous, reached))
        return positions.clamp_min(0), valid

    def _remember(self, request_id: str, next_positions: Tensor) -> None:
        if automatic_number(request_id) is not None:
            return  # an auto-N request never continues: nothing to keep for it
        if self._journal is not None:
            self._journal.append((request_id, self._next.get(request_id)))
        self._next[request_id] = next_positions
        self._next.move_to_end(request_id)
        while len(self._next) > MAX_TRACKED_REQUESTS:
            evicted, old = self._next.popitem(last=False)
            if self._journal is not None:
                self._journal.append((evicted, old))


def batch_tokens(lead: tuple[int, ...] | torch.Size) -> tuple[int, int]:
    """[batch, tokens] from the leading dims: one dim is one sequence; more fold into batch."""
    if len(lead) == 0:
        return 1, 1
    if len(lead) == 1:
        return 1, int(lead[0])
    return int(math.prod(lead[:-1])), int(lead[-1])


def as_batch_mask(mask: Tensor, batch: int, tokens: int) -> Tensor:
    """`mask` as [batch, L] with L >= tokens, or a ValueError naming both shapes."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    lead = mask.shape[:-1] if mask.dim() > 1 else torch.Size([1])
    if math.prod(lead) != batch or mask.shape[-1] < tokens:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit {batch} sequence(s) "
                         f"of {tokens} token(s)")
    return mask.reshape(batch, mask.shape[-1])


def check_positions(positions: object, count: int) -> None:
    """Raise TypeError/ValueError unless `positions` is an integer tensor of `count` values,
    none negative (checked where that reads nothing back: on the CPU; elsewhere negative ones
    count as 0)."""
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(f"positions must be integers, got {positions.dtype}")
    if positions.numel() != count:
        raise ValueError(f"positions must hold one position per token ({count}), got shape "
                         f"{tuple(positions.shape)}")
    if positions.device.type == "cpu" and count and int(positions.min()) < 0:
        raise ValueError(f"positions must be >= 0, got {int(positions.min())}")
