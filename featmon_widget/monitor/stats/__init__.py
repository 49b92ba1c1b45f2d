"""Exact per-feature statistics on the device: the arithmetic (`moments`), the running totals
(`running`), TopK values held in a CPU table (`pending`, folded by the C kernel in `native`),
the C kernels (`native`, `scans`; built by `library`, their shared codes and signatures in
`protocol`), and how it all runs: the monitor's `backend` chooses C, compiled or eager torch for
each kernel (`compiled`, `kernels`, `fused`: compiled with torch.compile, eager where that fails).
"""
