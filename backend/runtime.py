"""How a backend process uses the machine, set once when ``dreamjourney serve`` starts: the
threads one job's numeric code uses, and large blocks of memory given back when freed.

Job slots run side by side on one machine. Left alone, each job's numeric libraries size
their thread pools for the whole machine: two jobs on two cores then run four BLAS threads
that spin on each other's cores (a skinny N x 3 by 3 x 3 product took four times as long
with two OpenBLAS threads as with one on a busy 2-core machine), and a long job's pools keep
the CPU busy while a short job runs beside it. :func:`limit_job_threads` caps them at the
cores shared among the job slots.

glibc's malloc serves a block over its mmap threshold with a mapping of its own, returned to
the system when freed; but after such a block is freed it raises the threshold to that
block's size (up to 32 MiB), so later image-sized arrays come from the heaps of the threads
that freed them and stay there. A job that resumes on another slot's thread then builds its
working set again in another heap: a 512 x 512 dynamics clip held ~180 MB above the
backend's baseline at its end (~90 MB of it freed, unreturned), ~60 MB with the threshold
fixed. :func:`return_large_blocks` fixes it at :data:`LARGE_BLOCK_BYTES`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)


def cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def job_threads(configured: int, job_slots: int) -> int:
    """``configured``, or when it is 0 the cores shared among ``job_slots`` (at least 1)."""
    return configured if configured > 0 else max(1, cores() // max(1, job_slots))


def limit_job_threads(threads: int) -> None:
    """Cap torch's intra-op pool (which also sizes the CPU splatter's workers), OpenCV's,
    and every BLAS and OpenMP pool loaded by then (threadpoolctl), at ``threads``, for this
    whole process."""
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    threadpool_limits(limits=threads)
    log.debug("numeric code of a job: %d thread(s)", threads)


LARGE_BLOCK_BYTES = 256 << 10
"""Blocks from this size up (a 296 x 296 RGB image) are mapped on their own and returned
to the system when freed."""
_M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (glibc's malloc.h)."""


def return_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Fix glibc malloc's mmap threshold at ``threshold`` bytes (which also stops it from
    rising); False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if ok:
        log.debug("freed blocks of %d KiB and more go back to the system", threshold >> 10)
    return ok
