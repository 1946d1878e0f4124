"""Data-parallel training across processes with MPI (mpi4py): one core's worth of work per process.

Every process (rank) holds the whole model. For each step, the global batch of B documents is cut into
contiguous shares, one per rank, of about as many token positions each (share_bounds); each rank runs
forward_backward on its share with the loss averaged over all B documents (``mean_over=B``), the ranks sum the
contiguous gradient buffer and the loss (GradientSum: through shared memory when all run on one machine, else
Allreduce), and every rank takes the same Adam step. The update therefore equals the single-process update on the
whole batch, up to the order of floating-point additions (each document's loss weight, 1 / (B · n_doc), is the same
as in one process). Rank 0 alone prints, writes metrics and checkpoints.

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


# bytes per cache line: the shared slots and each rank's part of the sum start on a line of their own
_LINE = 64


def share_bounds(batch: Batch, rows: np.ndarray, size: int, block_size: int) -> np.ndarray:
    """Where each rank's contiguous share of a step's row of sequences starts: ``size + 1`` bounds per row of
    ``rows`` (one step's (B,), or a chunk's (steps, B)). Each cut falls at the prefix of the row whose count of
    positions is nearest r / size of the row's, so the ranks train on about as many positions each and finish
    their forward-backward at about the same time (documents differ in length: cut by count, one rank would wait
    for the other). Windows all train on ``block_size`` positions: cut by count."""
    rows = np.asarray(rows)
    if batch.windows or batch.offsets is None:
        n = np.ones(rows.shape, np.int64)
    else:
        n = np.minimum(block_size, batch.offsets[rows + 1] - batch.offsets[rows] - 1)
    seen, r, count = np.cumsum(n, axis=-1), np.arange(size + 1), rows.shape[-1]
    # share r starts after the sequences whose middle position comes before r / size of the whole, i.e.
    # (seen - n / 2) < total r / size, in integers
    middle = (2 * seen - n) * size
    cut = (middle[..., None, :] < 2 * seen[..., -1:, None] * r[:, None]).sum(axis=-1)
    if count < size:  # fewer sequences than ranks: the first ranks one each
        return np.broadcast_to(np.minimum(r, count), cut.shape).copy()
    # and every rank at least one: bound r - r never falls, and leaves a sequence for each rank after r
    return np.minimum(np.maximum.accumulate(cut - r, axis=-1), count - size) + r


def _shared_memory_room(need: int) -> bool:
    """Whether /dev/shm (where MPI keeps a shared window) has room for ``need`` bytes twice over (True where there
    is no /dev/shm to ask: MPI then decides)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return True
    return st.f_bavail * st.f_frsize >= 2 * need


class GradientSum:
    """Sums each step's gradient buffer ``grads`` (in place) and loss over the ranks of ``comm``, leaving the same
    bits on every rank. A context manager: leaving it without an error frees what it holds (a collective call).

    When every rank runs on this machine (``mpiexec -n N`` on one host), the ranks add through an MPI-3
    shared-memory window instead of ``MPI_Allreduce``: each copies its gradients and loss into a slot of its own;
    after a barrier, rank r adds up the r-th part of every slot (in rank order) into a shared sum, and after a
    second barrier every rank copies the whole sum back. Each rank reads and writes about 3x the buffer whatever
    the number of ranks; the window takes ranks + 1 buffers of shared memory (/dev/shm). Ranks on several hosts:
    one Allreduce of the gradients, one of the loss; likewise when /dev/shm lacks room for the window."""

    def __init__(self, comm: Any, grads: np.ndarray):
        from mpi4py import MPI

        if grads.ndim != 1 or not grads.flags.c_contiguous or grads.dtype.kind != "f":
            raise ValueError(f"grads must be a contiguous 1-D float buffer (Model.flat_grads), got {grads.dtype} "
                             f"of shape {grads.shape}")
        self.comm, self.grads = comm, grads
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._win: Optional[Any] = None
        self._node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        n, item = grads.size, grads.itemsize
        stride = -(-n * item // _LINE) * _LINE  # bytes per slot
        need = (self.size + 1) * stride + self.size * 8
        one_host = self.size > 1 and self._node.Get_size() == self.size
        # the window, else Allreduce; rank 0 decides for all whether /dev/shm has room for it (a container's 64 MB
        # may not)
        self.shared = one_host and comm.bcast(_shared_memory_room(need) if self.rank == 0 else None, root=0)
        if not self.shared:
            return
        self._win = MPI.Win.Allocate_shared(need if self.rank == 0 else 0, 1, comm=self._node)
        self._win.Lock_all()  # a passive-target epoch for the whole run: Win.Sync orders this rank's memory accesses
        mem = self._win.Shared_query(0)[0]
        # slots 0 .. size - 1: each rank's gradients; slot size: their sum
        self._slots = np.ndarray((self.size + 1, n), grads.dtype, mem, strides=(stride, item))
        self._losses = np.ndarray((self.size,), np.float64, mem, offset=(self.size + 1) * stride)
        line = _LINE // item
        lo, hi = (n * r // self.size // line * line for r in (self.rank, self.rank + 1))
        self._part = slice(lo, n if self.rank == self.size - 1 else hi)

    def __enter__(self) -> "GradientSum":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        # after an error (on this rank alone, perhaps) no collective call: the others may be inside a step
        if kind is None:
            self.close()

    def close(self) -> None:
        """Free the shared window (every rank must call this)."""
        if self._win is not None:
            self._win.Unlock_all()
            self._win.Free()
            self._win = None
        if self._node is not None:
            self._node.Free()
            self._node = None

    def _barrier(self) -> None:
        self._win.Sync()  # type: ignore[union-attr]
        self._node.Barrier()  # type: ignore[union-attr]
        self._win.Sync()  # type: ignore[union-attr]

    def __call__(self, loss: float) -> float:
        """Sum ``grads`` across the ranks in place; return the sum of the ranks' ``loss``."""
        if self.size == 1:
            return loss
        if self._win is None:
            return _allreduce(self.comm, self.grads, loss)
        slots, part = self._slots, self._part
        slots[self.rank] = self.grads
        self._losses[self.rank] = loss
        self._barrier()
        total = 0.0
        for x in self._losses.tolist():
            total += x
        np.add(slots[0, part], slots[1, part], out=slots[-1, part])
        for r in range(2, self.size):
            np.add(slots[-1, part], slots[r, part], out=slots[-1, part])
        self._barrier()  # every part summed; and every rank read the losses before anyone writes the next
        self.grads[...] = slots[-1]
        return total


def _allreduce(comm: Any, grads: np.ndarray, loss: float) -> float:
    from mpi4py import MPI

    total = np.array([loss])
    comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
    comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    return float(total[0])


def data_parallel_step(model: Model, batch: Batch, row: np.ndarray, lr: float, comm: Any, grad_accum: int = 1, *,
                       weight_decay: float = 0.0, grad_clip: Optional[float] = None, dropout: float = 0.0,
                       dropout_seed: int = 0, sums: Optional[GradientSum] = None,
                       bounds: Optional[np.ndarray] = None) -> float:
    """One training step on the sequences ``row`` selects from ``batch`` (a corpus's Feed: documents, or windows
    starting at those offsets), split across the ranks of ``comm`` (share_bounds), each rank's share in
    ``grad_accum`` micro-batches. Returns the batch loss (the same on every rank); a non-finite loss is returned
    without updating the model. ``sums``: the GradientSum of ``comm`` and this model's gradients that the run
    holds (without: two Allreduces); ``bounds``: this step's share_bounds, if computed already. The options as
    Model.train_step's: dropout masks are keyed by each sequence's index in ``row`` (share_start), clipping sees
    the norm of the summed gradient, decay and Adam follow on every rank alike."""
    rank = comm.Get_rank()
    if bounds is None:
        bounds = share_bounds(batch, row, comm.Get_size(), model.config.block_size)
    start = int(bounds[rank])
    mine = row[start:bounds[rank + 1]]
    grads = model.flat_grads
    loss, first = 0.0, True
    # this rank's part of the batch mean: its sequences' losses divided by the whole batch's count
    for part in np.array_split(mine, grad_accum) if grad_accum > 1 else (mine,):
        if part.size:
            loss += model.forward_backward(batch.select(part), mean_over=row.size, accumulate=not first,
                                           dropout=dropout, dropout_seed=dropout_seed, share_start=start)
            first = False
        start += part.size
    if first:  # fewer sequences than ranks: this rank contributes nothing
        grads[...] = 0
    loss = sums(loss) if sums is not None else _allreduce(comm, grads, loss)
    if np.isfinite(loss):
        model.apply_adam(lr, weight_decay=weight_decay, grad_clip=grad_clip)
    return loss


__all__ = ["GradientSum", "MPIUnavailable", "abort_on_error", "data_parallel_step", "launched_under_mpi",
           "share_bounds", "world"]
