"""One rank of `test_distributed_serve.py` (run under torchrun): every rank records its own
tokens and syncs; rank 0 serves the combined view until the test writes `done`."""

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from featmon_widget import FeatureMonitor

D_SAE = 32


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    monitor = FeatureMonitor(D_SAE, compile=False, throttle_ms=20)
    # Rank r records r + 2 tokens, every feature at r + 1.
    monitor.on_activation(torch.full((rank + 2, D_SAE), float(rank + 1)))
    monitor.sync()
    if rank == 0:
        with monitor.serve(token="rank0-secret", quiet=True) as server:
            (out / "url.tmp").write_text(server.url)
            (out / "url.tmp").rename(out / "url")
            deadline = time.monotonic() + 120
            while not (out / "done").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    dist.barrier()
    monitor.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
