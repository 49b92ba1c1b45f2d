"""CUDA hot-path check: zero host synchronisations per forward, exact statistics on the GPU.

`torch.cuda.set_sync_debug_mode("error")` turns any synchronising call (`.item()`, `.cpu()`,
`nonzero`, a boolean-mask read, ...) into an exception, so one clean run proves the hot path
(`on_activation`, `on_sparse_activation`, a hooked forward with our fused SAE and with a foreign
one) never waits on the device. Run: `python -m bench.gpu_check` on a machine with CUDA.
"""

from __future__ import annotations

import sys

import torch

from featmon_widget import FeatureMonitor

from .cases import model_and_saes


def _check_no_sync(label: str, step, warmup: int = 3, steps: int = 5) -> None:
    for _ in range(warmup):  # compilation and allocator warm-up may sync; not the hot path
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    print(f"ok  no host sync: {label} ({steps} steps)")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    torch.manual_seed(0)
    d_in, d_sae, tokens = 768, 24576, 512
    acts = torch.relu(torch.randn(4, tokens, d_sae, device=dev) - 1.5)
    mask = torch.ones(4, tokens, device=dev)
    mask[0, :100] = 0

    monitor = FeatureMonitor(d_sae, device=dev, features=[1, 2, 3], selected=[1, 2])
    with monitor.request("r"):
        _check_no_sync("on_activation", lambda: monitor.on_activation(acts, mask=mask))
    ref = acts[mask.bool()].double().cpu().numpy()
    stats = monitor.get_statistics([0, 1, 2]).features
    steps = 8
    for row in stats:
        col = ref[:, row.feature_idx]
        assert row.count == steps * len(col), (row.count, steps * len(col))
        assert abs(row.mean - col.mean()) <= 1e-9 * max(1.0, abs(col.mean())), row
        assert row.max == col.max() and row.min == col.min()
        assert abs(row.std - col.std(ddof=1)) <= 1e-9 * max(1.0, col.std()), row
    print("ok  statistics on the GPU match a float64 reference")

    values, indices = torch.topk(acts.reshape(-1, d_sae), 64, dim=1)
    sparse = FeatureMonitor(d_sae, device=dev)
    _check_no_sync("on_sparse_activation (k=64)",
                   lambda: sparse.on_sparse_activation(indices, values))

    model, ours, foreign = model_and_saes(d_in, d_sae, dev)
    x = torch.randn(4, tokens, d_in, device=dev)
    for label, sae in (("our SAE, fused", ours), ("foreign SAE", foreign)):
        m = FeatureMonitor.for_sae(sae, device=dev)
        with m.attach(model, "blocks.1", sae), torch.no_grad():
            _check_no_sync(f"hooked forward ({label})", lambda: model(x))
        assert m.state.errors == 0, m.state.last_error
    print("all GPU checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
