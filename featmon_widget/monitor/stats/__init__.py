"""Exact per-feature statistics on the device: the arithmetic (`moments`), the running totals
(`running`), TopK values held in a CPU table (`pending`, folded by the C kernel in `native`),
and how it all runs (`compiled`, `fused`: compiled with torch.compile, eager where that fails).
"""
