"""Data-parallel training under a real `mpiexec -n 2` (skipped, visibly, without mpi4py and an MPI launcher)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from conftest import blasgpt_cli

pytest.importorskip("mpi4py", reason="mpi4py not installed: pip install .[mpi] to run the MPI tests")
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
if MPIEXEC is None:
    pytest.skip("no mpiexec on PATH (pip install .[mpi] brings MPICH's)", allow_module_level=True)


def mpirun(n: int, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)



@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "words.txt"
    p.write_text("\n".join(f"{a}{b}{c}{d}" for a in "bdkm" for b in "aeiou" for c in "lnrst" for d in "aeo") + "\n")
    return p


def params(path: Path) -> blasgpt.Model:
    return blasgpt.load_checkpoint(path).model


# 1: fewer documents than ranks, one rank idles each step. The training options: dropout masks keyed by the index
# in the whole step, clipping of the summed gradient, decay; --grad-accum 3 of batch 1 splits 3 sequences into
# shares of 2 and 1, each in 3 micro-batches (some empty)
OPTIONS = ["--weight-decay", "0.1", "--grad-clip", "0.3", "--grad-accum", "3", "--dropout", "0.1", "--tie-embeddings"]


# 7-lengths: words of 1 to 12 letters, so the ranks' shares (cut by positions) differ in count, in 2 micro-batches
@pytest.mark.parametrize("batch, options", [(5, []), (1, []), (1, OPTIONS),
                                            (7, ["--grad-accum", "2", "--dropout", "0.1"])],
                         ids=["5", "1", "1-options", "7-lengths"])
def test_two_ranks_equal_one_process(tmp_path, corpus, batch, options):
    if batch == 7:
        corpus.write_text("\n".join("kamerolitseb"[i % 5: i % 5 + 1 + (5 * i) % 12] for i in range(90)) + "\n")
    common = ["--data", str(corpus), "--steps", "25", "--batch-size", str(batch), "--samples", "0", "--log-every",
              "0", "--n-layer", "2", *options]
    r = mpirun(2, "-m", "blasgpt", "train", *common, "--out", "mpi", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data-parallel over 2 MPI ranks" in r.stdout and r.stdout.count("saved") == 1  # rank 0 alone speaks
    r = blasgpt_cli(["train", *common, "--out", "single"], cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    a, b = params(tmp_path / "mpi" / "ckpt.safetensors"), params(tmp_path / "single" / "ckpt.safetensors")
    assert a.step == b.step == 25
    assert np.abs(a.flat_params - b.flat_params).max() <= 1e-12
    assert np.abs(a.adam_v - b.adam_v).max() <= 1e-12


def test_resume_with_a_different_number_of_ranks(tmp_path, corpus):
    common = ["--data", str(corpus), "--batch-size", "4", "--samples", "0", "--log-every", "0"]
    r = mpirun(2, "-m", "blasgpt", "train", *common, "--steps", "40", "--checkpoint-every", "20", "--out", "two",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = blasgpt_cli(["train", "--data", str(corpus), "--resume", "two/ckpt-20.safetensors", "--out", "one",
                     "--samples", "0", "--log-every", "0"], cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    r = blasgpt_cli(["train", *common, "--steps", "40", "--out", "ref"], cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr
    a, b = params(tmp_path / "one" / "ckpt.safetensors"), params(tmp_path / "ref" / "ckpt.safetensors")
    assert a.step == b.step == 40 and np.abs(a.flat_params - b.flat_params).max() <= 1e-12


SUMS = """
import numpy as np
from mpi4py import MPI
import blasgpt
from blasgpt.parallel import GradientSum, data_parallel_step, share_bounds

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

# the sum of every rank's buffer and loss, added in rank order, on every rank; used again and again
for dtype in (np.float32, np.float64):
    parts = [np.random.default_rng(r).standard_normal(1037).astype(dtype) for r in range(size)]
    mine = parts[rank].copy()
    with GradientSum(comm, mine) as sums:
        for rep in range(1, 4):
            mine[...] = parts[rank] * rep
            want = parts[0] * rep
            for r in range(1, size):
                want = want + parts[r] * rep
            assert sums(0.5 * (rank + 1) * rep) == 0.5 * rep * size * (size + 1) / 2
            assert np.array_equal(mine, want), (dtype, rep)

# training: documents of different lengths, so shares cut by positions differ in count; the same parameters on
# every rank, and those of one process training on the whole batches
docs = [("abcdefghijklmnop"[: 1 + (7 * i) % 15]) for i in range(60)]
tok = blasgpt.Tokenizer(sorted(set("".join(docs))))
corpus = tok.batch(docs, block_size=16)
cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=16, n_head=4, n_layer=2, block_size=16)
rows = (np.arange(20)[:, None] * 9 + np.arange(9)) % len(docs)
lrs = np.full(20, 0.01)
bounds = share_bounds(corpus, rows, size, 16)
assert (np.diff(bounds, axis=1).min(axis=1) != np.diff(bounds, axis=1).max(axis=1)).any()
one = blasgpt.Model(cfg, seed=3)
one.train_steps(corpus, rows, lrs)
model, plain = blasgpt.Model(cfg, seed=3), blasgpt.Model(cfg, seed=3)
with GradientSum(comm, model.flat_grads) as sums:
    assert sums.shared
    for k in range(20):
        data_parallel_step(model, corpus, rows[k], float(lrs[k]), comm, sums=sums, bounds=bounds[k])
        data_parallel_step(plain, corpus, rows[k], float(lrs[k]), comm)  # two Allreduces, shares cut here
every = comm.gather(model.flat_params.copy())
if rank == 0:
    assert all(np.array_equal(p, every[0]) for p in every[1:]), "ranks hold different parameters"
    assert np.abs(model.flat_params - one.flat_params).max() <= 1e-12
    assert np.abs(plain.flat_params - one.flat_params).max() <= 1e-12
    print("ok", size)
"""


@pytest.mark.parametrize("ranks", [2, 3])
def test_gradient_sum_and_position_shares(tmp_path, ranks):
    """GradientSum leaves every rank the rank-ordered sum (through a shared-memory window: all ranks run here),
    and steps whose shares are cut by positions leave the ranks identical and where one process lands."""
    script = tmp_path / "sums.py"
    script.write_text(SUMS)
    r = mpirun(ranks, str(script), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", str(ranks)]


FAILING = """
import sys
import blasgpt
from blasgpt.parallel import abort_on_error, world
comm = world()
with abort_on_error(comm):
    docs, tok, model = blasgpt.microgpt_start(["abc", "abd", "bcd", "cde"] * 10)
    if comm.Get_rank() == 1:
        raise ValueError("disk on fire")
    blasgpt.train(model, tok, docs, steps=50, batch_size=4, comm=comm)  # rank 0 would wait here forever
"""


def test_a_failing_rank_ends_the_job_with_a_message(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    r = mpirun(2, str(script), cwd=tmp_path, timeout=60)  # a hang would hit the timeout and fail the test
    assert r.returncode != 0
    assert "rank 1 of 2 failed (ValueError: disk on fire); aborting all ranks" in r.stderr


REFUSED = """
import sys
import blasgpt
from blasgpt.parallel import world
comm = world()
docs, tok, model = blasgpt.microgpt_start(["abc", "abd", "bcd", "cde"] * 10)
try:
    blasgpt.train(model, tok, docs, steps=5, batch_size=4, comm=comm, out_dir=sys.argv[1])
except blasgpt.RunDirError as e:  # (each rank its own file: lines two ranks print at once may interleave)
    with open(f"{sys.argv[2]}/rank{comm.Get_rank()}.txt", "w") as f:
        f.write(f"rank {comm.Get_rank()}: {e.code} {e}\\n")
"""


def test_an_out_dir_refused_on_rank_0_is_refused_on_every_rank(tmp_path):
    """Only rank 0 takes out_dir's lock; when it is refused, the other ranks raise the same error instead of
    waiting for a step that never comes."""
    from test_rundir import hold_lock

    script = tmp_path / "refused.py"
    script.write_text(REFUSED)
    holder = hold_lock(tmp_path / "run")
    try:
        r = mpirun(2, str(script), str(tmp_path / "run"), str(tmp_path), cwd=tmp_path, timeout=60)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert r.returncode == 0, r.stderr
    lines = [line for rank in (0, 1) if (tmp_path / f"rank{rank}.txt").exists()
             for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines()]
    assert [line.split(" is in use by another training run (pid ")[0] for line in lines] == [
        f"rank 0: 1 out_dir {tmp_path / 'run'}", f"rank 1: 1 out_dir {tmp_path / 'run'}"]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_scaling_bench_runs(tmp_path):
    from conftest import BENCH_DIR

    r = subprocess.run([sys.executable, "-m", "blasgpt", "bench", "--only", "mpi", "--quick"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, BLASGPT_BENCH_DIR=str(BENCH_DIR)))
    assert r.returncode == 0, r.stderr
    assert "MPI scaling skipped" not in r.stdout, r.stdout
    assert "1 rank(s):" in r.stdout and "2 rank(s):" in r.stdout and "allreduce" in r.stdout
