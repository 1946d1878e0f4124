"""Smoke test of the benchmark: it runs from an installed package, checks every row, writes its JSON.
(It asserts nothing about speed: timings belong to bench/, not to tests.)"""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_runs_and_verifies(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "blasgpt", "bench", "--quick", "--only", "d16", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    impls = {row["impl"] for row in data["rows"]}
    assert {"blasgpt", "numpy"} <= impls
    assert all(row["us_per_doc_min"] > 0 and row["checked"] for row in data["rows"])
    assert data["machine"]["peak_gflops_f32"] > 0 and "OpenBLAS" in data["machine"]["openblas"]
    assert "µs/doc" in r.stdout and "kernel" in r.stdout
