"""Data-parallel training across processes with MPI (mpi4py): one core's worth of work per process.

Every process (rank) holds the whole model. For each step, the global batch of B documents is cut into
contiguous shares, one per rank; each rank runs forward_backward on its share with the loss averaged over all
B documents (``mean_over=B``), one ``Allreduce`` sums the contiguous gradient buffer (and the loss) across ranks,
and every rank takes the same Adam step. The update therefore equals the single-process update on the whole batch,
up to the order of floating-point additions (each document's loss weight, 1 / (B · n_doc), is the same as in one
process). Rank 0 alone prints, writes metrics and checkpoints.

    mpiexec -n 2 python -m blasgpt train --batch-size 32 --n-embd 64     # needs: pip install ".[mpi]"

From Python: ``blasgpt.train(model, tok, docs, ..., comm=MPI.COMM_WORLD)``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator, Optional

import numpy as np

from .data import Batch
from .model import Model

# Variables a launcher sets in every process it starts (MPICH/Hydra, Open MPI, PMIx, MVAPICH).
_LAUNCHER_ENV = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


class MPIUnavailable(RuntimeError):
    """Started under an MPI launcher, but mpi4py cannot be imported."""


def launched_under_mpi() -> bool:
    """True when an MPI launcher (mpiexec, srun with PMI) started this process."""
    return any(k in os.environ for k in _LAUNCHER_ENV)


def world() -> Optional[Any]:
    """``MPI.COMM_WORLD`` when this process is one of several started by mpiexec, else None (without importing
    mpi4py, so single-process runs never initialise MPI)."""
    if not launched_under_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise MPIUnavailable("started under mpiexec, but mpi4py is not installed: pip install 'blasgpt[mpi]'") \
            from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


@contextlib.contextmanager
def abort_on_error(comm: Optional[Any]) -> Iterator[None]:
    """If the body raises on any rank, say so on stderr and abort every rank: the others would otherwise wait
    forever in their next collective call."""
    try:
        yield
    except SystemExit as e:
        if comm is not None and e.code not in (None, 0):
            _abort(comm, f"exited with status {e.code}", int(e.code) if isinstance(e.code, int) else 1)
        raise
    except BaseException as e:  # noqa: BLE001 (any failure must end the whole job)
        if comm is None:
            raise
        _abort(comm, f"{type(e).__name__}: {e}", 1)


def _abort(comm: Any, what: str, code: int) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"blasgpt: rank {comm.Get_rank()} of {comm.Get_size()} failed ({what}); "
                     f"aborting all ranks\n")
    sys.stderr.flush()
    comm.Abort(code)


def share(ids: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of a step's row of sequences (documents or window starts; shares differ in
    size by at most one)."""
    n = ids.size
    lo = rank * (n // size) + min(rank, n % size)
    hi = lo + n // size + (1 if rank < n % size else 0)
    return ids[lo:hi]


def data_parallel_step(model: Model, batch: Batch, row: np.ndarray, lr: float, comm: Any) -> float:
    """One training step on the sequences ``row`` selects from ``batch`` (a corpus's Feed: documents, or windows
    starting at those offsets), split across the ranks of ``comm``. Returns the batch loss (the same on every
    rank); a non-finite loss is returned without updating the model."""
    from mpi4py import MPI

    mine = share(row, comm.Get_rank(), comm.Get_size())
    grads = model.flat_grads
    if mine.size:  # this rank's part of the batch mean: its sequences' losses divided by the whole batch's count
        loss = model.forward_backward(batch.select(mine), mean_over=row.size)
    else:  # fewer sequences than ranks: this rank contributes nothing
        loss = 0.0
        grads[...] = 0
    total = np.array([loss])
    comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
    comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    loss = float(total[0])
    if np.isfinite(loss):
        model.apply_adam(lr)
    return loss


__all__ = ["MPIUnavailable", "abort_on_error", "data_parallel_step", "launched_under_mpi", "share", "world"]
