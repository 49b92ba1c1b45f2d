"""Random calls to the Python API. Each either works or raises a ValueError /
TypeError that leaves the monitor exactly as it was; nothing else escapes. Also: saves edited
at random (JSON values and tensors, digests recomputed or not) load and work, or raise a
ValueError; hostile label files give a count or a ValueError; watches and sync (without a
process group) work or refuse cleanly."""

import dataclasses
import gzip
import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.config import MonitorConfig
from featmon_widget.monitor.io import save_files, saving

SETTINGS = [f.name for f in dataclasses.fields(MonitorConfig)]
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.complex_numbers(allow_nan=True),
    lambda children: st.lists(children, max_size=4), max_leaves=10)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool,
          torch.complex64]


@st.composite
def tensors(draw, width):
    dims = draw(st.lists(st.integers(0, 3), max_size=2))
    last = draw(st.sampled_from([width, width, width - 1, 0]))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (*dims, last)
    if dtype.is_complex:
        return torch.ones(shape, dtype=dtype)
    return (torch.rand(shape) * 4 - 1).to(dtype)


CALLS = st.one_of(
    st.tuples(st.just("configure"), st.dictionaries(st.sampled_from([*SETTINGS, "bogus"]),
                                                    JUNK | st.integers(-5, 300), max_size=3)),
    st.tuples(st.just("on_activation"), st.fixed_dictionaries(
        {"acts": tensors(8) | JUNK},
        optional={"request_id": JUNK | st.text(max_size=300),
                  "positions": JUNK | st.builds(torch.arange, st.integers(0, 6))})),
    st.tuples(st.just("on_sparse_activation"), st.fixed_dictionaries(
        {"indices": st.builds(lambda n, k: torch.randint(-2, 10, (n, k)), st.integers(0, 3),
                              st.integers(1, 3)) | JUNK,
         "values": tensors(2) | JUNK})),
    st.tuples(st.just("get_top_features"), st.fixed_dictionaries({"k": JUNK, "metric": JUNK})),
    st.tuples(st.just("get_history"), st.fixed_dictionaries({"limit": JUNK})),
    st.tuples(st.just("get_statistics"), st.fixed_dictionaries({"features": JUNK})),
)


@pytest.fixture(scope="module")
def monitor():
    monitor = FeatureMonitor(8, compile=False)
    monitor.on_activation(torch.rand(2, 3, 8))
    yield monitor
    monitor.close()


def _observable(monitor):
    state = monitor.state
    stats = [(s.count, s.nan_count, s.active_count) for s in monitor.get_statistics().features]
    return (monitor.config, state.total_tokens, state.forward_passes, state.history_count,
            state.dropped_indices, stats)


@settings(max_examples=2_000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(call=CALLS)
def test_random_api_calls_work_or_refuse_cleanly(monitor, call):
    name, kwargs = call
    before = _observable(monitor)
    try:
        getattr(monitor, name)(**kwargs)
    except (ValueError, TypeError):
        assert _observable(monitor) == before, (name, kwargs)


# ---- save/load of edited folders: loads and works, or a ValueError -------------------------

W = 8


@pytest.fixture(scope="module")
def base_save(tmp_path_factory):
    """A save holding a bit of everything: dense, TopK and encoded input (so health has the
    input's moments), named and automatic requests, examples, selected features, labels."""
    folder = tmp_path_factory.mktemp("fuzz_base")
    monitor = FeatureMonitor(W, compile=False, device="cpu", selected=[1], features=[0, 3],
                             examples_per_feature=2, context_window=1, health_every=1)
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder.from_tensors(torch.randn(4, W, generator=g), torch.zeros(W),
                                         torch.randn(W, 4, generator=g), torch.zeros(4))
    with monitor.request("r"):
        monitor.on_activation(torch.rand(2, 3, W, generator=g),
                              token_ids=torch.randint(0, 9, (2, 3), generator=g))
    monitor.on_sparse_activation(torch.randint(0, W, (3, 2), generator=g), torch.rand(3, 2))
    monitor.encode_and_record(sae, torch.randn(1, 3, 4, generator=g), "enc")
    monitor.set_labels({0: "zero"})
    monitor.save(folder)
    monitor.close()
    return folder


def _nodes(doc, path=()):
    """Every (path, value) of a JSON document, the root first."""
    yield path, doc
    children = doc.items() if isinstance(doc, dict) else (
        enumerate(doc) if isinstance(doc, list) else ())
    for key, value in children:
        yield from _nodes(value, (*path, key))


def _set_at(doc, path, value):
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from(
        [-1, 0, 1, 2**31, 2**62, 2**63, 10**8]) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["cuda:3", "meta", "garbage", "auto-5", "r"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)
JSON_EDITS = st.lists(st.tuples(st.integers(0, 10**6), JSON_VALUES | st.just("<drop>")),
                      min_size=1, max_size=3)
TENSOR_VALUES = st.sampled_from([-1, -5, 0, 1, 7, 8, 10**6, 2**40, float("nan"), float("inf"),
                                 -float("inf"), 0.5, -0.5])
TENSOR_EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
    ["value", "value", "shorter", "dtype", "drop", "transpose"]), st.integers(0, 10**6),
    TENSOR_VALUES), min_size=1, max_size=3)


def _edit_json(meta, edits):
    for where, value in edits:
        nodes = list(_nodes(meta))[1:]
        path = nodes[where % len(nodes)][0]
        if value == "<drop>":
            parent = meta
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        else:
            _set_at(meta, path, value)
    return meta


def _fitting(value, dtype):
    """`value`, or -7 where `dtype` cannot hold it (a NaN or an infinity in an integer, a
    number beyond a narrow type)."""
    finite = value == value and abs(value) != float("inf")
    if not dtype.is_floating_point and not finite:
        return -7
    narrow = dtype in (torch.int32, torch.int16, torch.bfloat16, torch.float16)
    return -7 if narrow and finite and abs(value) > 2**30 else value


def _edit_tensors(tensors, edits):
    for which, kind, index, value in edits:
        names = sorted(tensors)
        name = names[which % len(names)]
        t = tensors[name].clone()
        if kind == "value" and t.numel():
            t.view(-1)[index % t.numel()] = _fitting(value, t.dtype)
        elif kind == "shorter" and t.dim() and t.shape[0]:
            t = t[:-1].clone()
        elif kind == "dtype":
            t = t.to(torch.float32 if not t.is_floating_point() else torch.int64)
        elif kind == "drop":
            del tensors[name]
            continue
        elif kind == "transpose" and t.dim() == 2:
            t = t.t().contiguous()
        tensors[name] = t
    return tensors


def _load_and_use(folder, out):
    """Load `folder`: a ValueError, or a monitor that records, answers, exports and saves."""
    try:
        monitor = FeatureMonitor.load(folder, compile=False)
    except ValueError:
        return False
    try:
        monitor.on_activation(torch.rand(2, W))
        monitor.on_sparse_activation(torch.randint(0, W, (2, 2)), torch.rand(2, 2))
        with monitor.request("after"):
            monitor.on_activation(torch.rand(1, 2, W))
        monitor.get_statistics()
        monitor.get_history(1000)
        monitor.get_health()
        monitor.get_top_features(3)
        for f in range(W):
            monitor.get_examples(f)
        monitor.to_html(out / "page.html")
        monitor.history_frame()
        monitor.save(out / "again")
        FeatureMonitor.load(out / "again", compile=False).close()
    finally:
        monitor.close()
    return True


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(json_edits=JSON_EDITS | st.none(), tensor_edits=TENSOR_EDITS | st.none(),
       sign=st.booleans() | st.just(True))
def test_edited_saves_load_and_work_or_refuse(base_save, tmp_path_factory, json_edits,
                                               tensor_edits, sign):
    work = tmp_path_factory.mktemp("fuzz_edit")
    folder = work / "save"
    shutil.copytree(base_save, folder)
    meta = json.loads((folder / "monitor.json").read_text())
    if tensor_edits:
        old = folder / meta["tensors_file"]
        tensors = _edit_tensors(load_file(str(old)), tensor_edits)
        old.unlink()
        save_file(tensors, str(folder / "t"))
        meta["tensors_sha256"] = digest = save_files.sha256_of(folder / "t")
        meta["tensors_file"] = save_files.tensors_file_name(digest)
        (folder / "t").rename(folder / meta["tensors_file"])
    if json_edits:
        meta = _edit_json(meta, json_edits)
    if isinstance(meta, dict) and sign:
        meta = saving.signed(meta)
    (folder / "monitor.json").write_text(json.dumps(meta))
    (work / "out").mkdir()
    _load_and_use(folder, work / "out")  # any exception but ValueError fails the test
    shutil.rmtree(work)


# ---- set_labels of hostile files: a count, or a ValueError --------------------------------


def _gzip(data: bytes, cut: int | None) -> bytes:
    packed = gzip.compress(data)
    return packed if cut is None else packed[: cut % max(len(packed), 1)]


LABEL_TEXT = st.one_of(
    st.dictionaries(st.text(max_size=4) | st.integers(-3, 12).map(str), JSON_VALUES,
                    max_size=4).map(json.dumps),
    st.lists(st.fixed_dictionaries({"index": JSON_VALUES | st.integers(-2, 12),
                                    "description": JSON_VALUES}),
             max_size=3).map(lambda rows: "\n".join(json.dumps(r) for r in rows)),
    st.lists(st.tuples(st.integers(-2, 12) | st.text(max_size=3), st.text(max_size=8)),
             max_size=3).map(lambda rows: "feature,label\n" + "\n".join(
                 f"{a},{b}" for a, b in rows)),
    st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n),
    st.sampled_from(['{"1": "\\ud83d"}', '{"\u00b2": "x"}', '{"1": "ok"', "\ufeff{}", "",
                     '{"99": "out"}', '[{"index": "1", "description": "a"}]']),
    st.text(max_size=60),
)
LABEL_FILES = st.tuples(
    st.sampled_from([".json", ".jsonl", ".csv", ".json.gz", ".jsonl.gz", ".txt"]),
    LABEL_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=80),
    st.none() | st.integers(0, 10**6), st.booleans())


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=LABEL_FILES)
def test_set_labels_of_hostile_files_works_or_refuses(monitor, tmp_path_factory, spec):
    suffix, data, cut, compress = spec
    path = tmp_path_factory.mktemp("labels") / f"labels{suffix}"
    path.write_bytes(_gzip(data, cut) if suffix.endswith(".gz") and compress else data)
    before = monitor.get_examples(0).label
    try:
        count = monitor.set_labels(path)
    except ValueError:
        assert monitor.get_examples(0).label == before  # a refused file changes nothing
        return
    assert isinstance(count, int) and count >= 0
    monitor.snapshot()
    monitor.history_frame()


# ---- watches and sync ------------------------------------------------------------------------


WATCH_CALLS = st.lists(st.one_of(
    st.tuples(st.just("watch"), st.fixed_dictionaries(
        {"features": JUNK | st.integers(-2, 9) | st.lists(st.integers(-1, 9), max_size=4)},
        optional={"above": JUNK | st.floats(-2, 2) | st.lists(st.floats(-2, 2), max_size=3),
                  "callback": st.sampled_from([None, print, lambda hit: 1 / 0, "nope", 3])})),
    st.tuples(st.just("forward"), st.integers(0, 3)),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
    st.tuples(st.just("sync"), st.sampled_from([None, "group", 3, object()])),
), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=WATCH_CALLS)
def test_watches_and_sync_work_or_refuse_cleanly(calls):
    monitor = FeatureMonitor(W, compile=False, device="cpu", throttle_ms=1)
    watches, expected, active = [], [], []  # each watch's hits counted here, and if recording
    gen = torch.Generator().manual_seed(len(calls))
    try:
        for name, arg in calls:
            before = _observable(monitor)
            if name == "forward":
                acts = torch.rand(arg, W, generator=gen) * 2 - 0.5
                monitor.on_activation(acts)
                for j, watch in enumerate(watches):
                    above = torch.tensor(watch.above, dtype=torch.float64)
                    columns = acts[:, list(watch.features)].double()
                    expected[j] += int((columns > above).sum()) if active[j] else 0
            elif name == "cancel" and watches:
                watches[arg % len(watches)].cancel()
                active[arg % len(watches)] = False
            elif name == "watch":
                try:
                    watches.append(monitor.watch(**arg))
                    expected.append(0)
                    active.append(True)
                except (ValueError, TypeError):
                    assert _observable(monitor) == before
            elif name == "sync":
                # Without a process group a sync explains itself and changes nothing.
                with pytest.raises((RuntimeError, ValueError, TypeError),
                                   match="torch.distributed|group"):
                    monitor.sync(arg)
                assert _observable(monitor) == before
        for watch, hits in zip(watches, expected, strict=True):
            assert watch.hits == hits and watch.dropped == 0  # every hit, none invented
    finally:
        monitor.close()
