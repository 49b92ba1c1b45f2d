"""`python -m bench --quick` keeps working: every case runs and the table and JSON come out."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # runs every benchmark case once
def test_quick_bench_prints_the_ratio_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for needle in ("fused statistics update", "sparse update + a read of the statistics",
                   "hooked forward with monitor (our SAE, fused)", "seed per-value .item() loop",
                   "build snapshot", "health every 8th (default)", "get_top_features(k=10)"):
        assert needle in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert all(r["seconds"] > 0 for r in rows)
    # On the CPU the dense update is the native kernel (a C compiler is there: torch.compile
    # needs one too); the inductor and eager rows are measured beside it.
    assert {r["extra"]["mode"] for r in rows if r["name"] == "fused statistics update"} == \
        {"native"}
    names = {r["name"] for r in rows}
    assert {"compiled update (inductor; the native kernel off)",
            "monitor.on_activation right after a reset (every example slot fills)"} <= names


@pytest.mark.slow  # a served child process under a short load
def test_serve_bench_runs_and_reports_every_figure():
    result = subprocess.run([sys.executable, "-m", "bench.serve", "--seconds", "4", "--clients",
                             "3", "--rate", "20", "--phase-seconds", "1", "--pairs", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["errors"] == 0 and report["clients_with_final_state"] == 3
    for key in ("p50_ms", "p99_ms", "rss_growth_pct", "stalled_ratio", "http_rate"):
        assert isinstance(report[key], float), key
