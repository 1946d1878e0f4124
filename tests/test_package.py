"""The installed package: typed stub in sync with the compiled module, BLAS shipped inside, public API present."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import blasgpt


def test_stub_matches_compiled_module():
    pytest.importorskip("mypy", reason="mypy not installed (pip install .[test])")
    allow = Path(__file__).parent / "data" / "stubtest-allowlist.txt"
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "blasgpt._core", "--allowlist", str(allow)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_ships_its_blas_and_data():
    pkg = Path(blasgpt.__file__).parent
    assert (pkg / "libscipy_openblas.so").is_file() or sys.platform != "linux"
    assert (pkg / "py.typed").is_file() and (pkg / "_core.pyi").is_file()
    assert (pkg / "datasets" / "names.txt").is_file()
    info = blasgpt.blas_info()
    assert "OpenBLAS" in info and "kernel" in info


@pytest.mark.skipif(sys.platform != "linux", reason="ELF check")
def test_core_finds_blas_through_origin_rpath():
    core = Path(blasgpt._core.__file__)
    out = subprocess.run(["readelf", "-d", str(core)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("readelf not available")
    assert "libscipy_openblas.so" in out.stdout
    assert "$ORIGIN" in out.stdout


def test_public_api():
    for name in blasgpt.__all__:
        assert hasattr(blasgpt, name), name
    assert blasgpt.__version__.count(".") == 2


def test_python_sources_are_lint_clean():
    pytest.importorskip("ruff", reason="ruff not installed (pip install .[test])")
    root = Path(__file__).resolve().parents[1]
    if not (root / "python" / "blasgpt").is_dir():
        pytest.skip("not running from a source checkout")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "python", "tests", "bench"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
