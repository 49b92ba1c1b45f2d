"""The benchmark cases: each returns rows of (name, seconds, baseline name) measured in one run."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.stats.kernels import StatisticsKernels
from featmon_widget.monitor.stats.running import RunningStats

from .timing import interleaved_medians, median_seconds


@dataclass
class Row:
    """One measured case, with the case it is compared against."""

    group: str
    name: str
    seconds: float
    baseline: str | None = None
    extra: dict | None = None


def naive_update(acts: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
    """Separate eager passes, as hand-written hooks and training loops do it."""
    x = acts.to(torch.float64)
    state["sum"] += x.sum(0)
    state["sumsq"] += (x * x).sum(0)
    torch.minimum(state["min"], x.amin(0), out=state["min"])
    torch.maximum(state["max"], x.amax(0), out=state["max"])
    state["active"] += (x > 0).sum(0)


def seed_style_update(acts: torch.Tensor, stats: dict[int, list[float]]) -> None:
    """The original design: a Python loop with one host read per value it records."""
    last = acts[-1]
    for idx in range(last.shape[0]):
        value = last[idx].item()
        if value != 0.0:
            s = stats.setdefault(idx, [0, 0.0, 0.0, float("inf"), float("-inf")])
            s[0] += 1
            s[1] += value
            s[2] += value * value
            s[3] = min(s[3], value)
            s[4] = max(s[4], value)


def update_cases(shapes: list[tuple[int, int]], dtypes: list[torch.dtype], repeat: int,
                 device: torch.device) -> list[Row]:
    """Statistics update against one read of the activations, per shape and dtype."""
    rows: list[Row] = []
    for n, f in shapes:
        for dtype in dtypes:
            rows += _update_group(n, f, dtype, repeat, device)
    return rows


def _update_group(n: int, f: int, dtype: torch.dtype, repeat: int,
                  device: torch.device) -> list[Row]:
    gen = torch.Generator(device=device).manual_seed(0)
    group = f"update {n}x{f} {str(dtype).removeprefix('torch.')}"
    read = "one read (acts.sum(0))"
    acts = torch.relu(torch.randn(n, f, generator=gen, device=device) - 1.5).to(dtype)
    valid = torch.ones(n, dtype=torch.bool, device=device)
    compiled = RunningStats(f, device, StatisticsKernels(compile=True))
    inductor = RunningStats(f, device, StatisticsKernels(compile=True, native=False))
    eager = RunningStats(f, device, StatisticsKernels(compile=False, native=False))
    state = {k: torch.zeros(f, dtype=torch.float64, device=device)
             for k in ("sum", "sumsq", "active")}
    state["min"] = torch.full((f,), float("inf"), dtype=torch.float64, device=device)
    state["max"] = torch.full((f,), float("-inf"), dtype=torch.float64, device=device)
    monitor = FeatureMonitor(f, device=device, compile=True)
    without = FeatureMonitor(f, device=device, compile=True, examples_per_feature=0)
    # Steady state: the same batch again never displaces a kept example once every slot is
    # full. What filling costs (every feature inserting) is its own row below.
    for _ in range(monitor.state.examples_per_feature):
        monitor.on_activation(acts)
    cases = {
        read: lambda: acts.sum(0),
        "fused statistics update": lambda: compiled.update(acts, None, 0.0),
        "monitor.on_activation (stats+history+examples)": lambda: monitor.on_activation(acts),
        "monitor.on_activation, examples off": lambda: without.on_activation(acts),
        "fused update, rows chosen by a padding mask": lambda: compiled.update(acts, valid, 0.0),
        "compiled update (inductor; the native kernel off)":
            lambda: inductor.update(acts, None, 0.0),
        "naive eager (5 separate passes)": lambda: naive_update(acts, state),
        "chunked eager update (fallback)": lambda: eager.update(acts, valid, 0.0),
    }
    fast = list(cases)[:5]
    seconds = dict(zip(fast, interleaved_medians([cases[k] for k in fast], repeat, 3, device),
                       strict=True))
    # The slow baselines run fewer rounds, still interleaved with the read they are compared to.
    few = max(3, repeat // 3)
    for name in list(cases)[5:]:
        pair = interleaved_medians([cases[read], cases[name]], few, 1, device)
        seconds[name] = pair[1] / pair[0] * seconds[read]
    filling = "monitor.on_activation right after a reset (every example slot fills)"
    read_now = median_seconds(cases[read], few)
    seconds[filling] = _after_reset(monitor, acts, few) / read_now * seconds[read]
    extra = {"mode": compiled.compiled.mode}
    return [Row(group, name, seconds[name], None if name == read else read,
                extra if name == "fused statistics update" else None)
            for name in [*cases, filling]]


def _after_reset(monitor: FeatureMonitor, acts: torch.Tensor, repeat: int) -> float:
    """Median seconds of `on_activation` on a monitor just reset (reset not timed)."""
    times = []
    for _ in range(repeat):
        monitor.reset_statistics()
        start = time.perf_counter()
        monitor.on_activation(acts)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def topk_cases(n: int, f: int, ks: list[int], repeat: int, device: torch.device) -> list[Row]:
    """The TopK SAE path, update from (indices, values), against the dense update."""
    return [row for k in ks for row in _topk_group(n, f, k, repeat, device)]


def _topk_group(n: int, f: int, k: int, repeat: int, device: torch.device) -> list[Row]:
    gen = torch.Generator(device=device).manual_seed(k)
    group = f"TopK update {n} tok, d_sae {f}, k={k}"
    values, indices = torch.topk(torch.randn(n, f, generator=gen, device=device), k, dim=1)
    values = torch.relu(values)
    dense = torch.zeros(n, f, device=device).scatter_(1, indices, values)
    valid = torch.ones(n, dtype=torch.bool, device=device)
    compiled = RunningStats(f, device, StatisticsKernels(compile=True))
    held = RunningStats(f, device, StatisticsKernels(compile=True))
    merged = RunningStats(f, device, StatisticsKernels(compile=True))

    def update_and_read() -> None:
        merged.update_sparse(indices, values, valid, 0.0)
        merged.flush()  # what any read of the statistics does first

    # Interleaved with the dense update, so every sparse call starts from cold caches, as it
    # would after a model's forward.
    dense_s, held_s, merged_s = interleaved_medians(
        [lambda: compiled.update(dense, valid, 0.0),
         lambda: held.update_sparse(indices, values, valid, 0.0), update_and_read],
        repeat, 3, device)
    every = 16
    amortized = held_s + max(merged_s - held_s, 0.0) / every
    base = "dense fused update"
    return [Row(group, base, dense_s),
            Row(group, "sparse update (on the CPU: held in the table)", held_s, base),
            Row(group, "sparse update + a read of the statistics", merged_s, base),
            Row(group, f"sparse, statistics read every {every} batches", amortized, base)]


def seed_case(repeat: int) -> list[Row]:
    """The seed's per-value host reads against our update, at a small size (1 x 4096)."""
    f = 4096
    acts = torch.relu(torch.randn(1, f) - 1.5)
    stats: dict[int, list[float]] = {}
    monitor = FeatureMonitor(f, compile=True)
    group = f"seed baseline 1x{f}"
    return [
        Row(group, "monitor.on_activation", median_seconds(lambda: monitor.on_activation(acts),
                                                           repeat, warmup=3)),
        Row(group, "seed per-value .item() loop",
            median_seconds(lambda: seed_style_update(acts, stats), max(3, repeat // 3)),
            "monitor.on_activation"),
    ]


class ForeignSAE(nn.Module):
    """An SAE-like object that is not ours: plain encode, eager."""

    def __init__(self, w_enc: torch.Tensor, b_enc: torch.Tensor) -> None:
        super().__init__()
        self.W_enc = nn.Parameter(w_enc, requires_grad=False)
        self.b_enc = nn.Parameter(b_enc, requires_grad=False)
        self.d_sae = w_enc.shape[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)


class TinyModel(nn.Module):
    """A two-block MLP residual model of width d: the 'small model' the SAE hooks onto."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def model_and_saes(d_in: int, d_sae: int, device: torch.device
                   ) -> tuple[TinyModel, SparseAutoencoder, ForeignSAE]:
    """A small model and two SAEs with the same weights: ours (fusable) and a foreign one."""
    torch.manual_seed(0)
    model = TinyModel(d_in).to(device).eval()
    w_enc = torch.randn(d_in, d_sae, device=device) / d_in**0.5
    b_enc = torch.full((d_sae,), -0.8, device=device)  # about 20% of features fire
    ours = SparseAutoencoder.from_tensors(w_enc, b_enc, w_enc.T.contiguous(),
                                          torch.zeros(d_in, device=device))
    return model, ours, ForeignSAE(w_enc.clone(), b_enc.clone()).to(device)


def forward_cases(tokens: int, d_in: int, d_sae: int, repeat: int,
                  device: torch.device) -> list[Row]:
    """A hooked forward with the monitor against the same forward plus a plain encode."""
    model, ours, foreign = model_and_saes(d_in, d_sae, device)
    x = torch.randn(1, tokens, d_in, device=device)
    group = f"hooked forward {tokens} tok, SAE {d_in}->{d_sae}"
    captured: dict[str, torch.Tensor] = {}
    model.blocks[1].register_forward_hook(lambda m, a, out: captured.__setitem__("h", out))
    compiled_encode = torch.compile(ours.encode, dynamic=True)
    hooked = {}
    monitors = []
    for label, sae, examples in (("ours", ours, 8), ("foreign", foreign, 8),
                                 ("ours, no examples", ours, 0),
                                 ("foreign, no examples", foreign, 0)):
        copy = TinyModel(d_in).to(device).eval()
        copy.load_state_dict(model.state_dict())
        monitor = FeatureMonitor.for_sae(sae, compile=True, examples_per_feature=examples)
        monitor.attach(copy, "blocks.1", sae)
        hooked[label] = copy
        monitors.append(monitor)
        with torch.no_grad():  # steady state: every example slot full (see _update_group)
            for _ in range(examples):
                copy(x)

    def run(fn):
        def timed() -> None:
            with torch.no_grad():
                fn()
        return timed

    cases = {
        "forward only": run(lambda: model(x)),
        "forward + eager encode (our SAE)": run(lambda: (model(x), ours.encode(captured["h"]))),
        "forward + compiled encode (our SAE)":
            run(lambda: (model(x), compiled_encode(captured["h"]))),
        "hooked forward with monitor (our SAE, fused)": run(lambda: hooked["ours"](x)),
        "forward + eager encode (foreign)": run(lambda: (model(x), foreign.encode(captured["h"]))),
        "hooked forward with monitor (foreign SAE)": run(lambda: hooked["foreign"](x)),
        "hooked, our SAE, examples off": run(lambda: hooked["ours, no examples"](x)),
        "hooked, foreign SAE, examples off": run(lambda: hooked["foreign, no examples"](x)),
    }
    seconds = dict(zip(cases, interleaved_medians(list(cases.values()), repeat, 3, device),
                       strict=True))
    for monitor in monitors:
        assert monitor.state.errors == 0, monitor.state.last_error
    fused = "hooked forward with monitor (our SAE, fused)"
    return [
        Row(group, "forward only", seconds["forward only"]),
        Row(group, "forward + eager encode (our SAE)", seconds["forward + eager encode (our SAE)"]),
        Row(group, "forward + compiled encode (our SAE)",
            seconds["forward + compiled encode (our SAE)"]),
        Row(group, fused, seconds[fused], "forward + eager encode (our SAE)"),
        Row(group, fused + " vs compiled", seconds[fused], "forward + compiled encode (our SAE)"),
        # The foreign object's encode is SAELens' form (matmul, bias, ReLU) with the same
        # weights: what "plain eager encode" meant before our own encode used addmm.
        Row(group, fused + " vs SAELens-form eager", seconds[fused],
            "forward + eager encode (foreign)"),
        Row(group, "forward + eager encode (foreign)", seconds["forward + eager encode (foreign)"]),
        Row(group, "hooked forward with monitor (foreign SAE)",
            seconds["hooked forward with monitor (foreign SAE)"],
            "forward + eager encode (foreign)"),
        Row(group, "hooked, our SAE, examples off", seconds["hooked, our SAE, examples off"],
            "forward + eager encode (our SAE)"),
        Row(group, "hooked, our SAE, examples off vs compiled",
            seconds["hooked, our SAE, examples off"], "forward + compiled encode (our SAE)"),
        Row(group, "hooked, foreign SAE, examples off",
            seconds["hooked, foreign SAE, examples off"], "forward + eager encode (foreign)"),
    ]


def oversight_cases(tokens: int, d_in: int, d_sae: int, repeat: int,
                    device: torch.device) -> list[Row]:
    """What health sampling and a watch add to a hooked forward (our SAE). One timed unit is 8
    forwards, so the sampled one (every 8th at the default) is always inside it."""
    model, ours, _ = model_and_saes(d_in, d_sae, device)
    x = torch.randn(1, tokens, d_in, device=device)
    group = f"health and watches, 8 hooked forwards of {tokens} tok, SAE {d_in}->{d_sae}"
    variants = {"health off": dict(health_every=0), "health every 8th (default)": {},
                "health off, watching 8 features": dict(health_every=0)}
    hooked = {}
    for label, settings in variants.items():
        copy = TinyModel(d_in).to(device).eval()
        copy.load_state_dict(model.state_dict())
        monitor = FeatureMonitor.for_sae(ours, compile=True, examples_per_feature=0,
                                         **settings)
        if "watching" in label:
            monitor.watch(list(range(8)), above=1.0)
        monitor.attach(copy, "blocks.1", ours)
        hooked[label] = copy

    def eight(label: str):
        def timed() -> None:
            with torch.no_grad():
                for _ in range(8):
                    hooked[label](x)
        return timed

    seconds = dict(zip(variants, interleaved_medians([eight(v) for v in variants], repeat, 2,
                                                     device), strict=True))
    return [Row(group, "health off", seconds["health off"]),
            Row(group, "health every 8th (default)", seconds["health every 8th (default)"],
                "health off"),
            Row(group, "health off, watching 8 features",
                seconds["health off, watching 8 features"], "health off")]


def snapshot_case(d_sae: int, repeat: int) -> list[Row]:
    monitor = FeatureMonitor(d_sae, selected=list(range(8)), features=list(range(16)))
    monitor.on_activation(torch.relu(torch.randn(256, d_sae) - 1.5))
    snap = monitor.snapshot()
    return [Row(f"snapshot d_sae={d_sae}", "build snapshot",
                median_seconds(monitor.snapshot, repeat), None, {"bytes": snap.nbytes()})]


def cpu_model() -> str:
    """The CPU's model name and vector extensions (a speed figure names its CPU)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    extensions = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"),
                                            ("amx_tile", "AMX"), ("asimd", "NEON"))
                  if flag in flags]
    return f"{name} ({', '.join(extensions) or 'no AVX2/AVX-512/AMX/NEON seen'})"


def machine() -> str:
    threads = torch.get_num_threads()
    return (f"{cpu_model()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{threads} threads")
