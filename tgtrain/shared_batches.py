"""Batches handed from DataLoader workers to the training process in shared memory that is used again.

torch sends every tensor a worker yields in a new shared-memory file: the worker has the kernel allocate, zero
and fault in each page of it, and the training process maps it afresh. For a batch of 8 clips of 8 RGB + 8 TG
frames at 224 (19 MB) that costs 27 ms of CPU, a fifth of what a loader worker spends on the batch; these slots
cost 4.6 (bench/handover.py).

Here each worker keeps a few slots (made as it needs them, up to KEEP): memory files (memfd) that it has mapped and
faulted in once. A batch is stacked into a free slot and only the slot's file descriptor travels; the training
process maps the slot, and when the last tensor over it is freed, a finalizer marks the slot free in its first
byte, which the worker reads before it writes the slot again. So a slot is never written while the trainer holds a
tensor of it, and when every slot is in use (a consumer that holds many batches), the worker makes one more, used
once.

Outside a worker, and where there is no memfd (it is Linux's), batch() stacks plain tensors, which the
DataLoader moves into shared memory as usual.
"""

import math
import mmap
import os
import weakref
from multiprocessing.reduction import DupFd

import torch
from torch.utils.data import get_worker_info

FREE, BUSY = 0, 1
HEADER = 64  # the flag byte, then the arrays at a cache-line boundary
KEEP = 6     # slots a worker keeps: the DataLoader's 2 prefetched batches, 1 in the trainer, 1 pinning, spares


class _Slot:
    """A memory file of `size` bytes after the header, mapped in this worker."""

    def __init__(self, size: int):
        self.size = size
        self.fd = os.memfd_create("tgtrain-batch", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, HEADER + size)
        self.map = mmap.mmap(self.fd, HEADER + size)
        self.flat = torch.frombuffer(self.map, dtype=torch.uint8)

    def free(self) -> bool:
        return self.map[0] == FREE


_slots: list[_Slot] = []  # this worker's (module state: each worker is a process of its own)


def _take(size: int) -> _Slot:
    """A free kept slot of `size` bytes, or a new one (kept while fewer than KEEP are), marked busy."""
    slot = next((s for s in _slots if s.size == size and s.free()), None)
    if slot is None:
        slot = _Slot(size)
        if len(_slots) < KEEP:
            _slots.append(slot)
    slot.map[0] = BUSY
    return slot


class SharedBatch:
    """A batch in a slot, as a worker yields it; unpickled in the training process as the batch dict."""

    def __init__(self, arrays: dict[str, list[torch.Tensor]], rest: dict):
        self.layout, start = {}, HEADER
        for name, tensors in arrays.items():
            shape = (len(tensors), *tensors[0].shape)
            self.layout[name] = (start, shape)
            start += -(-len(tensors) * tensors[0].nbytes // HEADER) * HEADER
        self.slot, self.rest = _take(start - HEADER), rest
        for name, (offset, shape) in self.layout.items():
            torch.stack(arrays[name], out=_view(self.slot.flat, offset, shape))

    def __reduce__(self):
        return _rebuild, (DupFd(self.slot.fd), self.slot.size, self.layout, self.rest)


def batch(arrays: dict[str, list[torch.Tensor]], rest: dict):
    """The arrays' tensors stacked, with the rest of the batch's fields: in a slot inside a DataLoader worker."""
    if get_worker_info() is not None and hasattr(os, "memfd_create"):
        return SharedBatch(arrays, rest)
    return {name: torch.stack(tensors) for name, tensors in arrays.items()} | rest


def _view(flat: torch.Tensor, offset: int, shape: tuple) -> torch.Tensor:
    return flat[offset:offset + math.prod(shape)].view(shape)


def _rebuild(fd: DupFd, size: int, layout: dict, rest: dict) -> dict:
    """In the training process: the batch's tensors over the slot, which is freed with the last of them."""
    fd = fd.detach()
    try:
        shared = mmap.mmap(fd, HEADER + size)
    finally:
        os.close(fd)
    view = memoryview(shared)
    weakref.finalize(view, _release, shared)  # torch holds the view for as long as any tensor over it lives
    flat = torch.frombuffer(view, dtype=torch.uint8)
    del view
    return {name: _view(flat, offset, shape) for name, (offset, shape) in layout.items()} | rest


def _release(shared: mmap.mmap) -> None:
    shared[0] = FREE
