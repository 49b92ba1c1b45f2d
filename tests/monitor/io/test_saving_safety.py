"""Loading refuses before it builds, and saving never loses the previous save (issue 25,
defects 3-6 and 13): bounds of every JSON value, a signed JSON, tensor shapes checked from the
header before anything is allocated, loaded values in range, an atomic replace that leaves the
previous save loadable whichever write fails, threads taking turns, one file mode."""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.io import save_files, saving

D = 16
DATA = Path(__file__).with_name("data")


def fed(seed: int = 0, **config) -> FeatureMonitor:
    monitor = FeatureMonitor(D, compile=False, device="cpu", examples_per_feature=2,
                             selected=[2], **config)
    g = torch.Generator().manual_seed(seed)
    with monitor.request("chat"):
        monitor.on_activation(torch.randn(2, 5, D, generator=g).relu())
    monitor.on_sparse_activation(torch.randint(0, D, (4, 3), generator=g), torch.rand(4, 3))
    return monitor


def tensors_file(folder: Path) -> Path:
    return folder / json.loads((folder / "monitor.json").read_text())["tensors_file"]


def edit(folder: Path, change_meta=None, change_tensors=None, sign: bool = True) -> None:
    """Edit a save as a careful hand would: both digests recomputed (unless not `sign`)."""
    meta = json.loads((folder / "monitor.json").read_text())
    if change_tensors is not None:
        old = tensors_file(folder)
        tensors = load_file(str(old))
        change_tensors(tensors)
        old.unlink()
        save_file(tensors, str(folder / "edited"))
        meta["tensors_sha256"] = digest = save_files.sha256_of(folder / "edited")
        meta["tensors_file"] = save_files.tensors_file_name(digest)
        (folder / "edited").rename(folder / meta["tensors_file"])
    if change_meta is not None:
        change_meta(meta)
    (folder / "monitor.json").write_text(json.dumps(saving.signed(meta) if sign else meta))


@pytest.fixture
def saved(tmp_path):
    fed().save(tmp_path)
    return tmp_path


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# ---- defect 3: validate before allocating -----------------------------------------------


def test_a_huge_width_is_refused_before_anything_is_built(saved, monkeypatch):
    edit(saved, lambda m: m.update(d_sae=10**8))

    def never(*args, **kwargs):
        raise AssertionError("built or read before the save was checked")

    monkeypatch.setattr(saving, "load_file", never)
    monkeypatch.setattr(FeatureMonitor, "__init__", never)
    with pytest.raises(ValueError, match=r"stats\.count.*\(16,\).*needs \(100000000,\)"):
        FeatureMonitor.load(saved)


def test_a_huge_width_costs_no_memory(saved):
    """In a fresh process: refusing `d_sae = 10**8` (which once allocated 5 GB before the
    allocator failed) raises the peak memory by less than 200 MB."""
    edit(saved, lambda m: m.update(d_sae=10**8, config={**m["config"], "top_k": 10}))
    script = (
        "import resource, sys\n"
        "from featmon_widget import FeatureMonitor\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    FeatureMonitor.load(sys.argv[1])\n"
        "except ValueError as exc:\n"
        "    print('refused', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    out = subprocess.run([sys.executable, "-c", script, str(saved)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             sys.path)})
    assert out.stdout.startswith("refused"), out.stderr[-2000:]
    assert int(out.stdout.split()[1]) < 200 * 1024  # KiB


def test_a_header_that_claims_more_bytes_than_the_file_holds_is_refused(saved):
    path = tensors_file(saved)
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["stats.count"]["shape"] = [10**12]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    edit(saved, lambda m: m.update(tensors_sha256=save_files.sha256_of(path)))
    meta = json.loads((saved / "monitor.json").read_text())
    path.rename(saved / save_files.tensors_file_name(meta["tensors_sha256"]))
    edit(saved, lambda m: m.update(tensors_file=save_files.tensors_file_name(
        m["tensors_sha256"])))
    with pytest.raises(ValueError, match="header entry of .stats.count. is malformed"):
        FeatureMonitor.load(saved)


# ---- defect 4: every JSON value typed and bounded; a hand edit is refused ------------------


@pytest.mark.parametrize("change, message", [
    (lambda m: m["parts"]["history"].update(next_code=2**63), "next_code must be in"),
    (lambda m: m["parts"]["examples"]["names"].update(next=-1), "next must be in"),
    (lambda m: m["parts"]["history"].update(names=[[5, "x"]]), r"code in 0\.\.next_code"),
    (lambda m: m["parts"]["health"].update(d_in=-5), "'health' entry is malformed"),
    (lambda m: m["parts"]["health"].update(forwards=2**63), "'health' entry is malformed"),
    (lambda m: m["parts"]["totals"].update(forward_passes=2**62 + 1), "forward_passes"),
    (lambda m: m["parts"]["totals"].update(since=True), "finite times"),
    (lambda m: m.update(device="garbage"), "device 'garbage'"),
    (lambda m: m.update(device="cuda:-3"), "device 'cuda:-3'"),
    (lambda m: m.update(d_sae=2**31), r"d_sae must be in 1\.\.2147483647"),
    (lambda m: m.update(next_automatic=2**63), "next_automatic"),
    (lambda m: m.update(saved_at="yesterday"), "saved_at"),
    (lambda m: m.update(tensors_file="../../etc/passwd"), "tensors_file"),
])
def test_a_value_out_of_bounds_is_a_value_error(saved, change, message):
    edit(saved, change)
    with pytest.raises(ValueError, match=message):
        FeatureMonitor.load(saved)


def test_a_nan_time_is_refused(saved):
    text = (saved / "monitor.json").read_text()
    (saved / "monitor.json").write_text(text.replace('"since": ', '"since": NaN, "x": ', 1))
    with pytest.raises(ValueError, match="NaN is not a number a save holds"):
        FeatureMonitor.load(saved)


@pytest.mark.parametrize("change", [
    lambda m: m["config"].update(threshold=0.5),
    lambda m: m["parts"]["totals"].update(forward_passes=1),
    lambda m: m.update(labels={"3": "edited"}),
])
def test_a_hand_edit_of_the_json_is_refused_as_corrupt(saved, change):
    edit(saved, change, sign=False)
    with pytest.raises(ValueError, match="does not match its own digest"):
        FeatureMonitor.load(saved)


@pytest.mark.parametrize("threshold", [0.9, -0.5, 50.0])
def test_an_edited_threshold_that_contradicts_the_statistics_is_refused(saved, threshold):
    edit(saved, lambda m: m["config"].update(threshold=threshold))  # digest recomputed
    with pytest.raises(ValueError, match=f"contradict the saved threshold {threshold}"):
        FeatureMonitor.load(saved)


def test_a_configuration_without_its_threshold_checks_the_default_one(saved):
    """A key left out of the saved configuration takes its default, in the check too (it raised
    KeyError, found by the fuzz test)."""
    edit(saved, lambda m: m["config"].pop("threshold"))
    assert FeatureMonitor.load(saved).state.threshold == 0.0


def test_a_threshold_changed_while_recording_loads(tmp_path):
    monitor = fed(threshold=0.2)
    monitor.configure(threshold=0.6)  # the active counts restart; count, min, max go on
    monitor.on_activation(torch.rand(3, D) + 0.1)
    monitor.save(tmp_path)
    loaded = FeatureMonitor.load(tmp_path)
    assert loaded.get_statistics() == monitor.get_statistics()
    assert loaded.config.threshold == 0.6


def test_a_version_2_save_is_bounded_too(tmp_path):
    shutil.copytree(DATA / "save_v2", tmp_path / "v2")
    path = tmp_path / "v2" / "monitor.json"
    meta = json.loads(path.read_text())
    meta["parts"]["history"]["next_code"] = 2**63
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="next_code must be in"):
        FeatureMonitor.load(tmp_path / "v2")


# ---- defect 13: loaded values in range ------------------------------------------------------


def _set(name, value, index=0):
    def change(t):
        t[name] = t[name].clone()
        t[name].view(-1)[index] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("stats.count", -1), r"'stats\.count' holds -1"),
    (_set("stats.active_count", 10**6), r"active_count' exceeds"),
    (_set("history.written", -5), r"'history\.written' holds -5"),
    (_set("history.top_idx", 10**6), r"'history\.top_idx' holds 1000000"),
    (_set("examples.value", float("nan")), r"'examples\.value' holds NaN"),
    (_set("totals.active_tokens", 10**6), r"'totals\.active_tokens' holds"),
    (_set("health.l0_counts", -2), r"'health\.l0_counts' holds -2"),
    (_set("totals.tokens", -7), r"'totals\.tokens' holds -7"),
    (_set("distributions.counts", -1), r"'distributions\.counts' holds -1"),
    (_set("health.sse", -1.0), r"'health\.sse' holds -1"),
])
def test_tampered_values_with_a_recomputed_digest_are_refused(saved, change, message):
    edit(saved, change_tensors=change)
    with pytest.raises(ValueError, match=message):
        FeatureMonitor.load(saved)


def test_an_empty_path_is_refused(saved, monkeypatch):
    monkeypatch.chdir(saved)
    with pytest.raises(ValueError, match="must name a folder"):
        fed().save("")
    with pytest.raises(ValueError, match="must name a folder"):
        FeatureMonitor.load("")


def test_both_files_get_the_mode_of_a_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        fed().save(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert set(modes.values()) == {0o640}, modes


# ---- defect 5: a failed re-save leaves the previous save ---------------------------------


def _fail_json(monkeypatch):
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        f.write('{"partial')
        f.close()
        raise OSError(27, "File too large")

    monkeypatch.setattr(save_files.os, "fdopen", fdopen)


def _fail_tensors(monkeypatch):
    def save_file_partly(tensors, path):
        Path(path).write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saving, "save_file", save_file_partly)


def _fail_switch(monkeypatch):
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == "monitor.json":
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(save_files.os, "replace", replace)


@pytest.mark.parametrize("fail", [_fail_json, _fail_tensors, _fail_switch])
def test_a_failed_resave_leaves_the_previous_save_loadable(saved, monkeypatch, fail):
    before = files(saved)
    first = FeatureMonitor.load(saved).get_statistics()
    fail(monkeypatch)
    with pytest.raises(OSError):
        fed(seed=1).save(saved)
    monkeypatch.undo()
    assert files(saved) == before  # nothing partial left, nothing of the old save lost
    assert FeatureMonitor.load(saved).get_statistics() == first


def test_a_file_size_limit_during_a_resave_leaves_the_previous_save(saved):
    """A real failing write (RLIMIT_FSIZE standing in for a full disk) in a subprocess: the
    new save is larger than the limit, the old one still loads and nothing is left behind."""
    before = files(saved)
    script = (
        "import resource, signal, sys, torch\n"
        "from featmon_widget import FeatureMonitor\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "m = FeatureMonitor(16, compile=False, device='cpu', history_size=20000)\n"
        "m.on_activation(torch.rand(100, 16))\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "try:\n"
        "    m.save(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print('failed', exc.errno)\n")
    out = subprocess.run([sys.executable, "-c", script, str(saved)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             sys.path)})
    assert out.stdout.startswith("failed"), out.stderr[-2000:]
    assert files(saved) == before
    FeatureMonitor.load(saved)


def test_a_resave_removes_the_tensors_it_replaced(saved):
    old = tensors_file(saved)
    fed(seed=1).save(saved)
    assert not old.exists()
    assert sorted(p.name for p in saved.iterdir()) == sorted(["monitor.json",
                                                              tensors_file(saved).name])
    fed(seed=1).save(saved)  # the same tensors again: the file is kept
    assert tensors_file(saved).exists()


def test_a_version_2_folder_saved_over_keeps_only_the_new_save(tmp_path):
    shutil.copytree(DATA / "save_v2", tmp_path / "v2")
    FeatureMonitor.load(tmp_path / "v2", compile=False).save(tmp_path / "v2")
    names = sorted(p.name for p in (tmp_path / "v2").iterdir())
    assert names == sorted(["monitor.json", tensors_file(tmp_path / "v2").name])


# ---- defect 6: threads saving into one folder take turns ----------------------------------


def test_threads_saving_into_one_folder_do_not_collide(tmp_path):
    monitors = [fed(seed=i) for i in range(6)]
    errors: list[BaseException] = []

    def save_often(monitor):
        try:
            for _ in range(8):
                monitor.save(tmp_path)
                FeatureMonitor.load(tmp_path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save_often, args=(m,)) for m in monitors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["monitor.json", tensors_file(tmp_path).name])
    loaded = FeatureMonitor.load(tmp_path).get_statistics()
    assert loaded in [m.get_statistics() for m in monitors]


# ---- defect 4: a forward that fails changes nothing ----------------------------------------


def _observable(monitor: FeatureMonitor):
    state = monitor.state
    stats = [(s.count, s.nan_count, s.active_count, s.mean) for s in
             monitor.get_statistics().features]
    return (state.total_tokens, state.forward_passes, state.history_count, stats,
            monitor.get_health().l0_counts, [monitor.get_examples(f) for f in range(D)])


@pytest.mark.parametrize("exhaust", ["history", "automatic"])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_a_forward_that_fails_on_its_request_code_changes_nothing(exhaust, kind):
    """The request codes are taken before anything merges: when one cannot be stored (the
    history's numbering exhausted, an automatic id past int64), the forward raises a
    ValueError and the statistics, totals, history and examples are as they were."""
    monitor = fed()
    request = "chat"
    if exhaust == "history":
        monitor._recording.history._names._next = 2**63
    else:
        request = f"auto-{2**64}"
    before = _observable(monitor)
    with pytest.raises(ValueError, match="int64"), monitor.request(request):
        if kind == "dense":
            monitor.on_activation(torch.rand(3, D))
        else:
            monitor.on_sparse_activation(torch.randint(0, D, (3, 2)), torch.rand(3, 2))
    assert _observable(monitor) == before


def test_a_loaded_code_at_the_bound_records_on(saved):
    edit(saved, lambda m: m["parts"]["history"].update(next_code=2**62))
    monitor = FeatureMonitor.load(saved)
    monitor.on_activation(torch.rand(2, D))
    assert monitor.state.forward_passes == 3
