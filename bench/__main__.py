"""Run every benchmark in one process and print ratios; `python -m bench --help`."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from . import distributions, samples
from .cases import (
    Row,
    forward_cases,
    machine,
    oversight_cases,
    seed_case,
    snapshot_case,
    topk_cases,
    update_cases,
)
from .cofiring import cofiring_cases
from .part_toggle import part_cases
from .widths import width_cases


def _table(rows: list[Row]) -> str:
    by_name = {(r.group, r.name): r for r in rows}
    lines = [f"{'case':<60} {'ms':>9} {'ratio':>8}  vs"]
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            lines.append(f"-- {group}")
        ratio = ""
        if r.baseline:
            ratio = f"{r.seconds / by_name[(r.group, r.baseline)].seconds:7.2f}x"
        extra = f"  {r.extra}" if r.extra else ""
        lines.append(f"   {r.name:<57} {r.seconds * 1e3:9.2f} {ratio:>8}  "
                     f"{r.baseline or ''}{extra}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.quick:
        repeat = args.repeat or 3
        shapes, tokens, d_in, d_sae = [(128, 2048)], 64, 64, 512
        topk_shape = (128, 4096)
    else:
        repeat = args.repeat or 9
        shapes = [(1024, 24576), (4096, 24576), (256, 131072)]
        tokens, d_in, d_sae = 1024, 768, 24576
        topk_shape = (1024, 65536)
    dtypes = [torch.float32, torch.bfloat16]
    rows = update_cases(shapes, dtypes, repeat, device)
    rows += topk_cases(*topk_shape, [32, 64], repeat, device)
    rows += forward_cases(tokens, d_in, d_sae, repeat, device)
    rows += oversight_cases(tokens, d_in, d_sae, max(3, repeat // 2), device)
    rows += cofiring_cases(shapes, dtypes, (*topk_shape, 64), repeat, device)
    for part in (distributions, samples):
        rows += part_cases(part.PART, part.OFF, shapes, dtypes, (*topk_shape, 64), repeat,
                           device)
    rows += seed_case(repeat)
    rows += snapshot_case(131072 if not args.quick else 4096, repeat)
    widths = [4096, 16384] if args.quick else [65536, 262144, 1 << 20, 1 << 22]
    rows += width_cases(widths, repeat)
    print(f"machine: {platform.machine()}, {machine()}, device {device}")
    print(_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"machine": machine(), "device": str(device),
         "rows": [r.__dict__ for r in rows]}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
