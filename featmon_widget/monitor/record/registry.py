"""One registry of the recorded state: each part declares its tensors once, with how it resets,
saves and loads, merges across ranks and counts its bytes; saving, `sync`, the resets and the
memory accounting read the registry instead of naming parts (after torchmetrics'
`Metric.add_state(name, default, dist_reduce_fx=...)`).

A part (`StatePart`) names its live tensors in `state_tensors` and the rest of its state, as
JSON, in `state_meta`. A save holds every part's tensors as `<part>.<tensor>` and its meta under
its name; loading checks every part (`check_state`: meta and tensor shapes, which meta tensors
suffice for, so a save is checked before anything is allocated; then `check_values`: the
values read) before any is loaded (`load_state`), so a bad save changes nothing.
`reset_on(event)` says what a statistics reset, a threshold change or a history clear does to
the part. `sync_rules` name the tensors that merge across the ranks of a
torch.distributed job and how (`SUM`, `CHAN`, `pooled_moments`); the rest stay local.
`memory_bytes` gives the bytes the part holds under the keys of `MonitorState.memory_bytes`.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, NamedTuple

import torch

from ...checks import cut
from ..stats.moments import Totals, combine_totals, empty_totals
from .requests import check_request_id

Tensor = torch.Tensor
Tensors = dict[str, Tensor]

# Counters and codes a save may hold: far beyond any real count, and room to count on in int64.
MAX_COUNT = 2**62


class Event(enum.Enum):
    """What can reset part of the recorded state."""

    STATISTICS = "statistics reset"  # `reset_statistics`: every statistic and total
    THRESHOLD = "threshold change"  # what depends on the threshold starts again
    HISTORY = "history clear"  # `clear_history`: the ring and the request positions


class Rule(NamedTuple):
    """How the other ranks' values of some tensors become one value: start from `start(like)`
    (values of no rank, shaped like `like`) and fold each other rank in, in rank order, with
    `combine`. Tensors that share a rule within a part are combined together."""

    name: str
    start: Callable[[Tensors], Tensors]
    combine: Callable[[Tensors, Tensors], Tensors]
    # Whether a rank may send the rule's tensors empty (it holds none yet, so it does not know
    # their length): it then takes part as `start` of the length the other ranks send.
    may_be_empty: bool = False
    # Elements of one item the rule merges whole (the tensors travel flat, in chunks of whole
    # items): 1 for elementwise rules.
    unit: int = 1


SUM = Rule("sum", lambda like: {n: torch.zeros_like(t) for n, t in like.items()},
           lambda a, b: {n: a[n] + b[n] for n in a})
# The tensors are the fields of `Totals`: counts, Chan-combined mean and M2, min and max.
CHAN = Rule("combine per-feature totals (Chan)",
            lambda like: empty_totals(like["count"].shape[0], like["count"].device)._asdict(),
            lambda a, b: combine_totals(Totals(**a), Totals(**b))._asdict())


def pooled_moments(count: str, mean: str, m2: str) -> Rule:
    """The rule pooling per-element means and M2 (sums of squared deviations) by Chan's
    formula, with float64 counts: the tensors `count`, `mean` and `m2` of one length (the
    count given per element); zeros are no data, and a rank may send them empty."""

    def combine(a: Tensors, b: Tensors) -> Tensors:
        n_a, n_b = a[count], b[count]
        n = n_a + n_b
        delta = b[mean] - a[mean]
        ratio = torch.where(n > 0, n_b / n.clamp_min(1e-300), 0.0)
        return {count: n, mean: a[mean] + delta * ratio,
                m2: a[m2] + b[m2] + delta.square() * n_a * ratio}

    return Rule(f"pooled moments ({count}, {mean}, {m2})",
                lambda like: {n: torch.zeros_like(t) for n, t in like.items()}, combine,
                may_be_empty=True)


class StatePart:
    """One part of the recorded state (see module doc). A subclass sets `name`, gives
    `state_tensors`, and overrides the defaults that do not fit it."""

    name: str  # unique in a recording: the prefix of its saved tensors, its key in the save
    # The first save format that holds the part: an older save loads without it, and the part
    # starts empty (see `StateRegistry.held_by`).
    since_format: ClassVar[int] = 1
    # Synced tensors (names from `sync_state`) and how each merges; the others stay local.
    sync_rules: ClassVar[dict[str, Rule]] = {}

    def state_tensors(self) -> Tensors:
        """The live tensors of the part: saving copies them, the default `load_state` copies
        into them."""
        raise NotImplementedError

    def state_meta(self) -> dict[str, Any]:
        """The rest of the part's state, JSON-able."""
        return {}

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """The tensors a save with `meta` must hold (default: the live ones)."""
        return {name: spec_of(t) for name, t in self.state_tensors().items()}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """Raise ValueError (or TypeError) unless `meta` can be this part's `state_meta`."""
        if meta:
            raise ValueError(f"unexpected entries {cut(repr(sorted(meta)), 80)}")

    def check_state(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        """Raise ValueError unless the saved `tensors` (names without the part's prefix) and
        `meta` can be loaded; changes nothing."""
        self.check_meta(meta)
        check_tensors(self.name, tensors, self.expected_tensors(meta))

    def check_values(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        """Raise ValueError unless the values of saved `tensors` (which passed `check_state`)
        are in range: counts not negative, indices in bounds (default: no check)."""

    def load_state(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        """Load a save checked by `check_state` (default: copy into the live tensors)."""
        for name, target in self.state_tensors().items():
            target.copy_(tensors[name])

    def reset_on(self, event: Event) -> None:
        """What `event` does to the part (default: nothing)."""

    def sync_state(self) -> Tensors:
        """This rank's values of the tensors in `sync_rules` (read under the monitor's lock
        and copied before they travel)."""
        live = self.state_tensors()
        return {name: live[name] for name in self.sync_rules}

    def take_remote(self, merged: Tensors | None) -> None:
        """Keep the other ranks' merged values of `sync_state` (None: no other rank). Parts
        with `sync_rules` override it."""
        if self.sync_rules:
            raise NotImplementedError(f"{type(self).__name__} syncs but keeps no remote view")

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held, by `MonitorState.memory_bytes` key (default: the live tensors, under
        the part's name)."""
        return {self.name: nbytes(self.state_tensors().values())}


class StateRegistry:
    """The parts of one recording, in order."""

    def __init__(self, parts: Iterable[StatePart]) -> None:
        self.parts: dict[str, StatePart] = {}
        for part in parts:
            if part.name in self.parts or "." in part.name or not part.name:
                raise ValueError(f"a part's name must be unique and hold no '.', got "
                                 f"{part.name!r}")
            self.parts[part.name] = part

    def __iter__(self) -> Iterator[StatePart]:
        return iter(self.parts.values())

    def held_by(self, format_version: int, metas: Any) -> StateRegistry:
        """The parts a save of `format_version` holds: a part newer than that format, absent
        from the save's `metas`, is left out (it stays as made: empty). A newer save must hold
        every part, and `check` says so when one is missing."""
        if not isinstance(metas, dict):
            return self
        return StateRegistry([part for part in self if part.name in metas
                              or part.since_format <= format_version])

    def __getitem__(self, name: str) -> StatePart:
        return self.parts[name]

    def state(self) -> tuple[Tensors, dict[str, dict[str, Any]]]:
        """Every part's live tensors as `<part>.<tensor>`, and every part's meta by name."""
        tensors = {f"{part.name}.{n}": t for part in self for n, t in part.state_tensors().items()}
        return tensors, {part.name: part.state_meta() for part in self}

    def check(self, tensors: Tensors, metas: Any, *, known_only: bool = False) -> None:
        """Raise ValueError unless the save (`state`'s two halves) loads into these parts;
        changes nothing. `known_only`: check these parts only, leaving parts they do not name
        (an extension's, see `Recording.extra_parts`) to the recording that has them."""
        if known_only and isinstance(metas, dict) and set(self.parts) <= set(metas):
            metas = {name: metas[name] for name in self.parts}
            tensors = {n: t for n, t in tensors.items() if n.split(".", 1)[0] in self.parts}
        if not isinstance(metas, dict) or set(metas) != set(self.parts):
            known = sorted(metas) if isinstance(metas, dict) else metas
            raise ValueError(f"the save holds the parts {cut(repr(known), 200)}; this monitor "
                             f"records {sorted(self.parts)}: the save is corrupt or was made "
                             f"with other parts")
        claimed = {n for n in tensors if n.split(".", 1)[0] in self.parts}
        extra = sorted(set(tensors) - claimed)
        if extra:
            raise ValueError(f"the save holds tensors this version does not know: {extra[:5]}")
        for part in self:
            meta = metas[part.name]
            if not isinstance(meta, dict):
                raise ValueError(f"the save's {part.name!r} entry is not an object: the save "
                                 f"is corrupt")
            try:
                part.check_state(self._of(part, tensors), meta)
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"the save's part {part.name!r}: {cut(str(exc), 300)}") from None

    def check_values(self, tensors: Tensors, metas: dict[str, dict[str, Any]]) -> None:
        """Raise ValueError unless every part accepts the values of a save that `check`
        accepted (see `StatePart.check_values`)."""
        for part in self:
            try:
                part.check_values(self._of(part, tensors), metas[part.name])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"the save's part {part.name!r}: {cut(str(exc), 300)}") from None

    def load(self, tensors: Tensors, metas: dict[str, dict[str, Any]]) -> None:
        """Load a save that `check` accepted."""
        for part in self:
            part.load_state(self._of(part, tensors), metas[part.name])

    def reset(self, event: Event) -> None:
        """Tell every part that `event` happened."""
        for part in self:
            part.reset_on(event)

    def sync_state(self) -> tuple[dict[str, Tensors], dict[str, dict[str, Rule]]]:
        """Copies of what every syncing part shares, and its rules (by part)."""
        syncing = [part for part in self if part.sync_rules]
        shares = {p.name: {n: t.clone() for n, t in p.sync_state().items()} for p in syncing}
        return shares, {p.name: dict(p.sync_rules) for p in syncing}

    def take_remote(self, merged: dict[str, Tensors] | None) -> None:
        """Hand each syncing part the other ranks' merged values (None: no other rank)."""
        for part in self:
            if part.sync_rules:
                part.take_remote(None if merged is None else merged[part.name])

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held, summed by key over the parts."""
        out: dict[str, int] = {}
        for part in self:
            for key, size in part.memory_bytes().items():
                out[key] = out.get(key, 0) + size
        return out

    @staticmethod
    def _of(part: StatePart, tensors: Tensors) -> Tensors:
        prefix = f"{part.name}."
        return {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}


def nbytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of `tensors`."""
    return sum(t.numel() * t.element_size() for t in tensors)


class Spec(NamedTuple):
    """The shape (None: any length) and dtype a saved tensor must have."""

    shape: tuple[int | None, ...]
    dtype: torch.dtype


def spec_of(tensor: Tensor) -> Spec:
    """The spec `tensor` meets exactly."""
    return Spec(tuple(tensor.shape), tensor.dtype)


def check_tensors(part: str, tensors: Tensors, expected: dict[str, Spec]) -> None:
    """Raise ValueError unless `tensors` are exactly `expected`'s names, with their shapes and
    dtypes (messages name them `<part>.<tensor>`)."""
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ValueError(f"the save holds tensors this version does not know: "
                         f"{[f'{part}.{n}' for n in extra[:5]]}")
    for name, (shape, dtype) in expected.items():
        full, tensor = f"{part}.{name}", tensors.get(name)
        if tensor is None:
            raise ValueError(f"the save has no tensor {full!r}: the save is corrupt")
        fits = tensor.dim() == len(shape) and all(
            want is None or want == have for want, have in zip(shape, tensor.shape, strict=True))
        if not fits or tensor.dtype != dtype:
            dims = ", ".join("any" if d is None else str(d) for d in shape)
            needs = f"({dims},)" if len(shape) == 1 else f"({dims})"
            raise ValueError(f"the save's tensor {full!r} is {tuple(tensor.shape)} "
                             f"{tensor.dtype}; its configuration needs {needs} {dtype}: the "
                             f"save is corrupt")


def check_range(part: str, tensors: Tensors, name: str, lo: float | None = None,
                hi: float | None = None, nan: bool = True) -> None:
    """Raise ValueError unless every value of `tensors[name]` is in lo..hi (None: unbounded)
    and, unless `nan`, none is NaN (the message names `<part>.<name>`)."""
    t = tensors[name]
    if t.numel() == 0:
        return
    bad = None
    if not nan and t.is_floating_point() and bool(t.isnan().any()):
        bad = "NaN"
    elif lo is not None and bool((t < lo).any()):
        bad = f"{t.min().item()!r} (below {lo})"
    elif hi is not None and bool((t > hi).any()):
        bad = f"{t.max().item()!r} (above {hi})"
    if bad is not None:
        raise ValueError(f"the save's tensor '{part}.{name}' holds {bad}: the save is corrupt")


def check_count(name: str, value: Any) -> None:
    """Raise ValueError unless `value` is an int in 0..`MAX_COUNT` (a counter or a code)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT):
        raise ValueError(f"{name} must be an int in 0..{MAX_COUNT}, got {cut(repr(value), 40)}")


# ---- per-request tensors: saved as <prefix><i>, their request ids listed in the meta -------


def keyed_tensors(keyed: dict[str, Tensor], prefix: str) -> Tensors:
    """`keyed`'s tensors as `<prefix><i>`, in order (the ids go into the meta)."""
    return {f"{prefix}{i}": t for i, t in enumerate(keyed.values())}


def keyed_specs(ids: Any, prefix: str, spec: Spec) -> dict[str, Spec]:
    """The specs of per-request tensors saved for `ids` (checked: a list of request ids)."""
    if not isinstance(ids, list):
        raise ValueError(f"the request ids must be a list, got {cut(repr(ids), 60)}")
    for request_id in ids:
        check_request_id(request_id)
    return {f"{prefix}{i}": spec for i in range(len(ids))}


def keyed_load(tensors: Tensors, prefix: str, ids: list[str],
               device: torch.device) -> OrderedDict[str, Tensor]:
    """The per-request tensors saved for `ids`, on `device`."""
    return OrderedDict((rid, tensors[f"{prefix}{i}"].to(device)) for i, rid in enumerate(ids))
