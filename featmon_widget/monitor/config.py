"""Monitor configuration: one immutable value, validated as a whole before it is applied."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..checks import check_int, cut, is_int

HISTORY_SIZE_RANGE = (1, 100_000)
TOP_K_RANGE = (1, 256)
# Monitored features have their value stored for every recorded token; the cap bounds history
# memory.
MAX_MONITORED_FEATURES = 256
# Selected features each keep a device-side value histogram; the cap bounds snapshot size.
MAX_SELECTED_FEATURES = 8
# Top-activating examples kept per feature, and tokens kept on each side of one.
EXAMPLES_PER_FEATURE_RANGE = (0, 64)
CONTEXT_WINDOW_RANGE = (0, 64)
# Sampled activating tokens kept per feature (0: off), and the seed of their random keys.
SAMPLES_PER_FEATURE_RANGE = (0, 64)
SAMPLE_SEED_RANGE = (0, 2**63 - 1)
# Snapshots at most once per this many milliseconds (0: as fast as they can be built; an hour
# at most: a larger value is a typo, and the delivery thread's timed wait cannot take any).
THROTTLE_MS_RANGE = (0.0, 3_600_000.0)
# Activations are compared with the threshold; beyond this magnitude nothing is, or everything.
THRESHOLD_LIMIT = 1e30
# Health is sampled every this many forwards (0: off).
HEALTH_EVERY_RANGE = (0, 1_000_000)


@dataclass(frozen=True)
class MonitorConfig:
    """What the monitor records. Change it with `FeatureMonitor.configure`, never in place."""

    enabled: bool = True
    # The monitored features (None: all): reported, ranked and stored per token in the history.
    features: tuple[int, ...] | None = None
    history_size: int = 100
    top_k: int = 10
    threshold: float = 0.0
    throttle_ms: float = 100.0
    selected: tuple[int, ...] = ()
    examples_per_feature: int = 8
    context_window: int = 8
    # A uniform sample of each feature's activating tokens (`record/samples.py`).
    samples_per_feature: int = 2
    sample_seed: int = 0
    # Health: sample every n-th forward (0: off); features firing on fewer than this share of
    # tokens (but not never) are ultra-rare.
    health_every: int = 8
    rare_floor: float = 1e-5
    # Every feature's value distribution (128 bytes a feature; off for very wide SAEs).
    distributions: bool = True

    def replace(self, d_sae: int, **changes: Any) -> MonitorConfig:
        """Return a copy with `changes` applied, after validating every changed value.

        Raises TypeError/ValueError naming the parameter and the bad value; `self` is untouched.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown configuration parameter(s): {', '.join(unknown)}")
        clean = {name: _VALIDATORS[name](value, d_sae) for name, value in changes.items()}
        return dataclasses.replace(self, **clean)


def _int_in_range(name: str, lo: int, hi: int):
    return lambda value, d_sae: check_int(name, value, lo, hi)


def _check_top_k(value: Any, d_sae: int) -> int:
    top_k = _int_in_range("top_k", *TOP_K_RANGE)(value, d_sae)
    if top_k > d_sae:
        raise ValueError(f"top_k must be <= d_sae ({d_sae}), got {value!r}")
    return top_k


def feature_list(name: str, cap: int):
    """A validator of a list of distinct feature indices (at most `cap`) for parameter `name`.
    Linear time, the length checked first: it runs under the monitor's lock."""
    def check(value: Any, d_sae: int) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise TypeError(f"{name} must be a list of ints, got {_short(value)}")
        items = []
        for v in value:
            if len(items) == cap:
                raise ValueError(f"{name} may name at most {cap} features, got more")
            items.append(v)
        bad = [v for v in items if not is_int(v)]
        if bad:
            raise TypeError(f"{name} must hold ints, got {_short(bad[0])}")
        out_of_range = [int(v) for v in items if not 0 <= v < d_sae]
        if out_of_range:
            raise ValueError(
                f"{name} must be feature indices in 0..{d_sae - 1}, got {out_of_range[0]}"
            )
        seen: set[int] = set()
        for v in items:
            if int(v) in seen:
                raise ValueError(f"{name} has duplicate feature index {int(v)}")
            seen.add(int(v))
        return tuple(int(v) for v in items)

    return check


def _short(value: Any) -> str:
    """`repr(value)`, cut to 80 characters (error messages reach the widget)."""
    return str(cut(repr(value), 80))


def real_in_range(name: str, value: Any, lo: float, hi: float) -> float:
    """`value` as a finite float in lo..hi, or a TypeError/ValueError naming it (never an
    OverflowError: ints too large for a float are out of range too)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and lo <= number <= hi):
        raise ValueError(f"{name} must be a finite number in {lo:g}..{hi:g}, got "
                         f"{_short(value)}")
    return number


def _check_features(value: Any, d_sae: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    features = feature_list("features", MAX_MONITORED_FEATURES)(value, d_sae)
    if not features:
        raise ValueError("features must name at least one feature (use None for all), got []")
    return features


def _check_threshold(value: Any, d_sae: int) -> float:
    return real_in_range("threshold", value, -THRESHOLD_LIMIT, THRESHOLD_LIMIT)


def _check_throttle(value: Any, d_sae: int) -> float:
    return real_in_range("throttle_ms", value, *THROTTLE_MS_RANGE)


def _check_enabled(value: Any, d_sae: int) -> bool:
    return _check_bool("enabled", value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


_VALIDATORS = {
    "enabled": _check_enabled,
    "features": _check_features,
    "history_size": _int_in_range("history_size", *HISTORY_SIZE_RANGE),
    "top_k": _check_top_k,
    "threshold": _check_threshold,
    "throttle_ms": _check_throttle,
    "selected": feature_list("selected", MAX_SELECTED_FEATURES),
    "examples_per_feature": _int_in_range("examples_per_feature", *EXAMPLES_PER_FEATURE_RANGE),
    "context_window": _int_in_range("context_window", *CONTEXT_WINDOW_RANGE),
    "samples_per_feature": _int_in_range("samples_per_feature", *SAMPLES_PER_FEATURE_RANGE),
    "sample_seed": _int_in_range("sample_seed", *SAMPLE_SEED_RANGE),
    "health_every": _int_in_range("health_every", *HEALTH_EVERY_RANGE),
    "rare_floor": lambda value, d_sae: real_in_range("rare_floor", value, 0.0, 1.0),
    "distributions": lambda value, d_sae: _check_bool("distributions", value),
}
