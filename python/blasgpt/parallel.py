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


def _share_start(n: int, rank: int, size: int) -> int:
    return rank * (n // size) + min(rank, n % size)


def share(ids: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of a step's row of sequences (documents or window starts; shares differ in
    size by at most one)."""
    return ids[_share_start(ids.size, rank, size):_share_start(ids.size, rank + 1, size)]


def data_parallel_step(model: Model, batch: Batch, row: np.ndarray, lr: float, comm: Any, grad_accum: int = 1, *,
                       weight_decay: float = 0.0, grad_clip: Optional[float] = None, dropout: float = 0.0,
                       dropout_seed: int = 0) -> float:
    """One training step on the sequences ``row`` selects from ``batch`` (a corpus's Feed: documents, or windows
    starting at those offsets), split across the ranks of ``comm``, each rank's share in ``grad_accum``
    micro-batches. Returns the batch loss (the same on every rank); a non-finite loss is returned without updating
    the model. The options as Model.train_step's: dropout masks are keyed by each sequence's index in ``row``
    (share_start), clipping sees the norm of the summed gradient, decay and Adam follow on every rank alike."""
    from mpi4py import MPI

    start = _share_start(row.size, comm.Get_rank(), comm.Get_size())
    mine = share(row, comm.Get_rank(), comm.Get_size())
    grads = model.flat_grads
    loss, first = 0.0, True
    # this rank's part of the batch mean: its sequences' losses divided by the whole batch's count
    for part in np.array_split(mine, grad_accum):
        if part.size:
            loss += model.forward_backward(batch.select(part), mean_over=row.size, accumulate=not first,
                                           dropout=dropout, dropout_seed=dropout_seed, share_start=start)
            first = False
        start += part.size
    if first:  # fewer sequences than ranks: this rank contributes nothing
        grads[...] = 0
    total = np.array([loss])
    comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
    comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    loss = float(total[0])
    if np.isfinite(loss):
        model.apply_adam(lr, weight_decay=weight_decay, grad_clip=grad_clip)
    return loss


__all__ = ["MPIUnavailable", "abort_on_error", "data_parallel_step", "launched_under_mpi", "share", "world"]
