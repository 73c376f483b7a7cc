"""Batches handed from DataLoader workers to the training process in shared memory that is used again.

torch sends every tensor a worker yields in a new shared-memory file: the worker has the kernel allocate, zero
and fault in each page of it, and the training process maps it afresh. For a batch of 8 clips of 8 RGB + 8 TG
frames at 224 (19 MB) that costs 27 ms of CPU, a fifth of what a loader worker spends on the batch; these slots
cost 4.6 (bench/handover.py).

Here each worker keeps a few slots (made as it needs them, up to KEEP): memory files (memfd) that it has mapped and
faulted in once. A batch is stacked into a free slot and only the slot's file descriptor travels; the training
process maps each kept slot once, and when the last tensor over a batch is freed, a finalizer marks its slot free in
its first byte, which the worker reads before it writes the slot again. So a slot is never written while the
trainer holds a tensor of it, and when every slot is in use (a consumer that holds many batches), the worker makes
one more, used once.

On CUDA the training process also page-locks each kept slot once (cudaHostRegister), so a batch goes to the GPU
straight from its slot by DMA: torch's pin_memory thread, which receives the batches, finds them pinned already and
copies nothing, where it would copy every batch into pinned memory (about 12 MB per stream and step at the paper's
batch). A copy from the slot may still be running when the last tensor over the batch is freed, so a pinned slot is
marked free only once a CUDA event recorded at that moment has completed (every copy issued from the batch comes
before it on the stream). The pin thread maps and frees slots, the training thread releases them: one lock keeps
the counts.

Outside a worker, and where there is no memfd (it is Linux's), batch() stacks plain tensors, which the
DataLoader moves into shared memory as usual.
"""

import itertools
import math
import mmap
import os
import threading
import weakref
from collections import OrderedDict, deque
from multiprocessing.reduction import DupFd

import torch
from torch.utils.data import get_worker_info

FREE, BUSY = 0, 1
HEADER = 64  # the flag byte, then the arrays at a cache-line boundary
KEEP = 6     # slots a worker keeps: the DataLoader's 2 prefetched batches, 1 in the trainer, 1 in a copy, spares
MAPPED = 256  # kept slots the training process keeps mapped (and pinned), beyond which idle ones are let go


class _Slot:
    """A memory file of `size` bytes after the header, mapped in this worker; `key` names it while it is kept."""

    def __init__(self, size: int, key):
        self.size, self.key = size, key
        self.fd = os.memfd_create("tgtrain-batch", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)
        os.ftruncate(self.fd, HEADER + size)
        self.map = mmap.mmap(self.fd, HEADER + size)
        self.flat = torch.frombuffer(self.map, dtype=torch.uint8)

    def free(self) -> bool:
        return self.map[0] == FREE


_slots: list[_Slot] = []  # this worker's (module state: each worker is a process of its own)
_numbers = itertools.count()


def _take(size: int) -> _Slot:
    """A free kept slot of `size` bytes, or a new one (kept while fewer than KEEP are), marked busy."""
    slot = next((s for s in _slots if s.size == size and s.free()), None)
    if slot is None:
        kept = len(_slots) < KEEP
        slot = _Slot(size, (os.getpid(), next(_numbers)) if kept else None)
        if kept:
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
        return _rebuild, (DupFd(self.slot.fd), self.slot.size, self.layout, self.rest, self.slot.key)


def batch(arrays: dict[str, list[torch.Tensor]], rest: dict):
    """The arrays' tensors stacked, with the rest of the batch's fields: in a slot inside a DataLoader worker."""
    if get_worker_info() is not None and hasattr(os, "memfd_create"):
        return SharedBatch(arrays, rest)
    return {name: torch.stack(tensors) for name, tensors in arrays.items()} | rest


def _view(flat: torch.Tensor, offset: int, shape: tuple) -> torch.Tensor:
    return flat[offset:offset + math.prod(shape)].view(shape)


# -- in the training process --------------------------------------------------------------------------------

class _Mapping:
    """A slot as the training process maps it; `users` counts its batches not yet freed."""

    def __init__(self, fd: int, size: int):
        self.map, self.users = mmap.mmap(fd, HEADER + size), 0
        self.pinned = _pin(self.map)

    def close(self) -> None:
        if self.pinned:
            torch.cuda.cudart().cudaHostUnregister(_address(self.map))  # before the unmap, as CUDA requires
        self.map.close()


_mapped: OrderedDict = OrderedDict()  # kept slots' key -> _Mapping, the least recently used first
_unpinning: deque = deque()  # (CUDA event, _Mapping) of freed batches whose copies may still run
_lock = threading.RLock()  # over the two above and the users counts; re-entered when a finalizer runs inside


def _rebuild(fd: DupFd, size: int, layout: dict, rest: dict, key=None) -> dict:
    """In the training process: the batch's tensors over its slot, which is freed with the last of them."""
    fd = fd.detach()
    with _lock:
        _free_copied()
        try:
            mapping = _mapped.get(key) if key is not None else None
            if mapping is None:
                mapping = _Mapping(fd, size)
                if key is not None:
                    _mapped[key] = mapping
                    _let_go()
        finally:
            os.close(fd)
        if key is not None:
            _mapped.move_to_end(key)
        mapping.users += 1
    view = memoryview(mapping.map)
    # torch holds the view for as long as any tensor over it lives; nothing is left to free at exit
    weakref.finalize(view, _release, mapping).atexit = False
    flat = torch.frombuffer(view, dtype=torch.uint8)
    del view
    return {name: _view(flat, offset, shape) for name, (offset, shape) in layout.items()} | rest


def _release(mapping: _Mapping) -> None:
    with _lock:
        if mapping.pinned:  # after the copies from it that the stream holds
            event = torch.cuda.Event()
            event.record()
            _unpinning.append((event, mapping))
        else:
            _free(mapping)


def _free(mapping: _Mapping) -> None:
    mapping.users -= 1
    mapping.map[0] = FREE


def _free_copied() -> None:
    """Free the pinned slots whose copies have finished (events complete in order on one stream)."""
    while _unpinning and _unpinning[0][0].query():
        _free(_unpinning.popleft()[1])


def _let_go() -> None:
    """Unmap the idle mappings of workers that are gone (their memory is freed with the last mapping), then the least
    recently used idle ones past MAPPED."""
    idle = [k for k, m in _mapped.items() if m.users == 0]
    gone = [k for k in idle if not _alive(k[0])]
    for key in gone + [k for k in idle if k not in gone][:max(0, len(_mapped) - len(gone) - MAPPED)]:
        _mapped.pop(key).close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: another user's process has the number now
        return False
    return True


def _pin(shared: mmap.mmap) -> bool:
    """Page-lock a mapping for CUDA's DMA, when this process uses CUDA; whether it did."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return False
    return int(torch.cuda.cudart().cudaHostRegister(_address(shared), len(shared), 0)) == 0


def _address(shared: mmap.mmap) -> int:
    return torch.frombuffer(shared, dtype=torch.uint8, count=1).data_ptr()
