import pytest

from featmon_widget.monitor.config import MAX_MONITORED_FEATURES, MonitorConfig


def test_replace_changes_only_what_is_passed():
    cfg = MonitorConfig(history_size=500, top_k=20)
    new = cfg.replace(100, features=[1, 2])
    assert new.features == (1, 2)
    assert new.history_size == 500  # the original silently reset this
    assert new.top_k == 20


@pytest.mark.parametrize(
    ("changes", "error", "needle"),
    [
        ({"features": [1, 1000]}, ValueError, "1000"),
        ({"features": [-1]}, ValueError, "-1"),
        ({"features": [3, 3]}, ValueError, "duplicate feature index 3"),
        ({"features": [1.5]}, TypeError, "1.5"),
        ({"features": "1,2"}, TypeError, "'1,2'"),
        ({"features": []}, ValueError, "at least one"),
        ({"features": list(range(MAX_MONITORED_FEATURES + 1))}, ValueError, "at most"),
        ({"history_size": 0}, ValueError, "history_size"),
        ({"history_size": 100_001}, ValueError, "100001"),
        ({"history_size": True}, TypeError, "history_size"),
        ({"top_k": 257}, ValueError, "top_k"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"threshold": float("inf")}, ValueError, "inf"),
        ({"throttle_ms": -1}, ValueError, "throttle_ms"),
        # Once accepted (and the delivery thread died), or an OverflowError.
        ({"throttle_ms": 1e13}, ValueError, "throttle_ms must be a finite number in 0..3.6e"),
        ({"throttle_ms": 10**400}, ValueError, "throttle_ms"),
        ({"threshold": 10**400}, ValueError, "threshold must be a finite number"),
        ({"threshold": -1e31}, ValueError, "threshold"),
        ({"threshold": complex(1, 1)}, TypeError, "threshold"),
        ({"enabled": 1}, TypeError, "enabled"),
        ({"selected": list(range(9))}, ValueError, "selected"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_values_raise_naming_parameter_and_value(changes, error, needle):
    cfg = MonitorConfig()
    with pytest.raises(error, match=needle):
        cfg.replace(1000, **changes)
    assert cfg == MonitorConfig()


def test_top_k_cannot_exceed_width():
    with pytest.raises(ValueError, match="d_sae"):
        MonitorConfig().replace(5, top_k=6)


def test_features_none_means_all():
    assert MonitorConfig(features=(1,)).replace(10, features=None).features is None


class CountingList(list):
    """A list that counts the items read from it."""

    read = 0

    def __iter__(self):
        for item in super().__iter__():
            self.read += 1
            yield item


def test_a_long_feature_list_is_refused_in_linear_time():
    """40,001 items with one duplicate took 12 s under the monitor lock (a quadratic duplicate
    search). The length cap is checked while reading the list: the refusal reads no more than
    the cap and one item."""
    items = CountingList([*range(40_000), 39_999])
    with pytest.raises(ValueError, match="at most 256"):
        MonitorConfig().replace(50_000, features=items)
    assert items.read == MAX_MONITORED_FEATURES + 1
    with pytest.raises(ValueError, match="duplicate feature index 254"):
        MonitorConfig().replace(50_000, features=[*range(255), 254])


def test_duplicate_search_is_linear_at_the_cap():
    dup_last = [*range(1, 256), 1]
    with pytest.raises(ValueError, match="duplicate feature index 1"):
        MonitorConfig().replace(1000, features=dup_last)
