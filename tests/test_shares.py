"""How data-parallel training cuts each step's batch between ranks (blasgpt.parallel.share_bounds): by positions, so
the ranks finish their forward-backward together; pure functions, no MPI needed (tests/test_mpi.py runs the ranks)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import blasgpt
from blasgpt.parallel import share_bounds

BLOCK = 16


def documents(lengths: list[int]) -> blasgpt.Batch:
    """A packed batch of documents training on ``lengths`` positions each ([BOS, c1, ..., cn, BOS]: n + 1 of them)."""
    offsets = np.concatenate(([0], np.cumsum(np.asarray(lengths) + 1))).astype(np.int64)
    return blasgpt.Batch(np.zeros(int(offsets[-1]), np.int32), offsets)


def test_two_ranks_split_by_positions_not_by_count():
    # by count, rank 0 would train on 3 positions and rank 1 on 15
    b = documents([1, 1, 1, 5, 5, 5])
    assert share_bounds(b, np.arange(6), 2, BLOCK).tolist() == [0, 4, 6]
    # a document trains on at most block_size positions
    b = documents([40, 2, 2, 2, 2, 2, 2, 2])
    assert share_bounds(b, np.arange(8), 2, BLOCK).tolist() == [0, 1, 8]
    assert share_bounds(b, np.arange(8), 2, 3).tolist() == [0, 4, 8]


def test_the_cut_is_the_prefix_nearest_half_the_positions():
    rng = np.random.default_rng(0)
    for _ in range(300):
        lengths = rng.integers(1, 12, int(rng.integers(2, 40)))
        bounds = share_bounds(documents(lengths.tolist()), np.arange(lengths.size), 2, BLOCK)
        prefix = np.concatenate(([0], np.cumsum(lengths)))
        assert bounds[0] == 0 and bounds[2] == lengths.size
        assert abs(2 * prefix[bounds[1]] - prefix[-1]) == np.abs(2 * prefix[1:-1] - prefix[-1]).min()


@pytest.mark.parametrize("size", [2, 3, 4, 7])
def test_every_rank_gets_a_share_and_no_share_outgrows_its_memory_estimate(size):
    """Contiguous, in order, one sequence at least per rank while there are enough, and never more positions than
    Corpus.memory plans for (one longest sequence over an even share by count)."""
    rng = np.random.default_rng(size)
    for _ in range(300):
        lengths = rng.integers(1, 9, int(rng.integers(1, 13)))
        n = lengths.size
        bounds = share_bounds(documents(lengths.tolist()), np.arange(n), size, BLOCK)
        assert bounds[0] == 0 and bounds[-1] == n and (np.diff(bounds) >= (1 if n >= size else 0)).all()
        if n < size:
            assert bounds.tolist() == [min(r, n) for r in range(size + 1)]
        prefix = np.concatenate(([0], np.cumsum(lengths)))
        assert np.diff(prefix[bounds]).max() <= (-(-n // size) + 1) * lengths.max()


def test_a_chunk_of_steps_at_once_equals_step_by_step():
    rng = np.random.default_rng(1)
    b = documents(rng.integers(1, 20, 50).tolist())
    rows = rng.integers(0, 50, (9, 11))
    for size in (2, 3, 5, 12):
        chunk = share_bounds(b, rows, size, BLOCK)
        assert chunk.shape == (9, size + 1)
        assert all(np.array_equal(chunk[k], share_bounds(b, rows[k], size, BLOCK)) for k in range(9))


def test_windows_are_cut_by_count():
    b = blasgpt.Batch.of_windows(np.zeros(100, np.int32), [0])
    assert share_bounds(b, np.array([5, 60, 7, 90, 1]), 2, 8).tolist() == [0, 2, 5]
    assert share_bounds(b, np.arange(8), 4, 8).tolist() == [0, 2, 4, 6, 8]


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_the_shared_window_needs_room_in_dev_shm():
    """A window /dev/shm cannot hold twice over (a container's 64 MB for a big model) means the Allreduce path."""
    from blasgpt.parallel import _shared_memory_room

    st = os.statvfs("/dev/shm")
    free = st.f_bavail * st.f_frsize
    assert _shared_memory_room(1) and _shared_memory_room(free // 2 - 4096)
    assert not _shared_memory_room(free // 2 + 4096) and not _shared_memory_room(1 << 62)
