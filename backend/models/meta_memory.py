"""Peak bytes of a forward pass on the meta device: what a GPU would hold, without a GPU.

:class:`MemoryTracker` is a ``TorchDispatchMode``: every tensor an op makes is counted from its
creation until the last Python reference to its storage goes (views share their base's
storage and are not counted again; in-place ops allocate nothing). Inputs and weights made
outside the tracker are not counted: the caller adds the resident bytes it knows.

Attention runs as on a GPU with flash / memory-efficient kernels: while tracking,
``scaled_dot_product_attention`` makes its output and its log-sum-exp (fp32, one per query
and head), never the N x N score matrix a meta decomposition would make. What this cannot see:
the CUDA caching allocator's rounding and fragmentation, cuBLAS / cuDNN workspaces, kernels'
internal scratch, and the CUDA context itself (about 0.3-0.5 GB).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class MemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensors created under it."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list] = {}  # storage key -> [bytes, references]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fresh = [r.alias_info is None for r in func._schema.returns]
        outputs, _ = tree_flatten(out)
        for i, t in enumerate(outputs):
            if isinstance(t, torch.Tensor) and (i >= len(fresh) or fresh[i]):
                self._track(t)
        return out

    def reset_peak(self) -> None:
        self.peak = self.live


def _flash_like_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                     scale=None, enable_gqa=False):
    """Attention's memory as a fused GPU kernel has it: the output and an fp32 log-sum-exp."""
    out = torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)
    torch.empty(*query.shape[:-1], dtype=torch.float32, device=query.device)  # the kernel's LSE
    return out


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Patch ``F.scaled_dot_product_attention`` with the fused kernel's memory footprint."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_like_sdpa
    torch.nn.functional.scaled_dot_product_attention = _flash_like_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
        torch.nn.functional.scaled_dot_product_attention = original


def parameter_bytes(module: torch.nn.Module | None, dtype_bytes: int | None = None) -> int:
    """Bytes of a module's parameters and buffers (at ``dtype_bytes`` each when given)."""
    if module is None:
        return 0
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        total += t.numel() * (dtype_bytes or t.element_size())
    return total


def peak_of(fn, *args, **kwargs) -> tuple[int, object]:
    """(peak bytes the call allocates on the meta device, its result). Tensors the call makes
    without naming a device (legacy ``torch.Tensor([...])`` in some models) go to meta too."""
    tracker = MemoryTracker()
    with torch.no_grad(), torch.device("meta"), fused_attention(), tracker:
        result = fn(*args, **kwargs)
    return tracker.peak, result
