"""tgtrain.shared_batches: batches in reused worker memory arrive whole and are never written while held."""

import gc
import os
import signal
import time

import pytest
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tests.test_data import shards, stream  # noqa: F401 (shards is a fixture)
from tgtrain import shared_batches
from tgtrain.data import loader, shard_urls


def test_a_loader_worker_delivers_the_in_process_batches_while_the_trainer_holds_them(shards):  # noqa: F811
    # one worker draws exactly what the process draws by itself (same seed, worker 0 of 1); every batch is held,
    # more than a worker keeps slots for, so a slot written while its batch is held would show here
    urls, count = shard_urls(shards, "labeled"), 3 * shared_batches.KEEP
    alone = list(stream(urls, epoch_batches=count, size=40))
    held = list(loader(stream(urls, epoch_batches=count, size=40), workers=1))
    assert len(held) == len(alone) == count
    for a, b in zip(alone, held):
        assert a["key"] == b["key"] and torch.equal(a["label"], b["label"])
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["tg"], b["tg"])
        assert b["rgb"].shape == (3, 4, 40, 40, 3) and b["rgb"].dtype == torch.uint8


def test_a_held_batch_outlives_its_worker_killed_by_sigkill(shards):  # noqa: F811
    urls = shard_urls(shards, "labeled")
    alone = next(iter(stream(urls, epoch_batches=2, size=40)))
    batches = loader(stream(urls, epoch_batches=2, size=40), workers=1)
    held = next(iter(batches))
    worker = batches._iterator._workers[0]
    # Killed idle, once it has made its second batch: a worker killed while it holds the lock of the loader's shared
    # "done" event (it takes it for each batch) leaves it held, and the loader's shutdown would wait on it forever.
    time.sleep(1)
    try:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)  # the signal reaches this process before the join returns
    except RuntimeError as e:  # torch's SIGCHLD handler says so
        assert "killed by signal" in str(e)
    assert not worker.is_alive()
    assert torch.equal(held["rgb"], alone["rgb"]) and torch.equal(held["tg"], alone["tg"])
    del batches


def sent(batch: shared_batches.SharedBatch) -> dict:
    """The batch as the training process gets it: what its pickle calls, with the file descriptor passed through
    multiprocessing's resource sharer (nothing is unpickled here)."""
    rebuild, args = batch.__reduce__()
    return rebuild(*args)


def test_a_slot_is_written_again_only_once_the_last_tensor_over_it_is_freed():
    clips = [torch.full((2, 3), k, dtype=torch.uint8) for k in range(4)]
    first = sent(shared_batches.SharedBatch({"rgb": clips}, {"key": ["a"]}))
    slot = shared_batches._slots[-1]
    assert torch.equal(first["rgb"], torch.stack(clips)) and first["key"] == ["a"] and not slot.free()
    view = first["rgb"][1:]  # a view keeps the slot as much as the batch does
    del first
    assert not slot.free()
    second = shared_batches.SharedBatch({"rgb": clips}, {})
    assert second.slot is not slot
    del view
    assert slot.free()
    third = shared_batches.SharedBatch({"rgb": clips[::-1]}, {})
    assert third.slot is slot and torch.equal(sent(third)["rgb"], torch.stack(clips[::-1]))


def open_slot_files() -> int:
    """This process's file descriptors on slot memory files (a mapping holds one of its own)."""
    return sum("tgtrain-batch" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def forget_slots() -> None:
    """Drop this process's slots, as a worker and as a trainer (here both are this process)."""
    del shared_batches._slots[:]
    gc.collect()
    for mapping in shared_batches._mapped.values():
        mapping.close()
    shared_batches._mapped.clear()


def test_a_worker_keeps_at_most_keep_slots_however_many_batches_are_held():
    forget_slots()
    clips = [torch.zeros(8, dtype=torch.uint8)]
    held = [sent(shared_batches.SharedBatch({"rgb": clips}, {})) for _ in range(2 * shared_batches.KEEP)]
    assert len(shared_batches._slots) == shared_batches.KEEP
    assert all(torch.equal(h["rgb"], torch.zeros(1, 8, dtype=torch.uint8)) for h in held)
    del held
    # each kept slot: the worker's file and mapping, the trainer's mapping; the others' files closed once sent
    assert open_slot_files() == 3 * shared_batches.KEEP


def test_the_trainer_maps_each_kept_slot_once_and_lets_a_gone_workers_go(shards):  # noqa: F811
    forget_slots()
    urls, count = shard_urls(shards, "labeled"), 4 * shared_batches.KEEP
    batches = loader(stream(urls, epoch_batches=count, size=40), workers=1)
    seen = [b["key"] for b in batches]  # each batch freed before the next: a few slots serve them all
    assert len(seen) == count and 0 < len(shared_batches._mapped) <= shared_batches.KEEP
    assert all(m.users == 0 for m in shared_batches._mapped.values())
    worker = next(iter(shared_batches._mapped))[0]
    del batches
    gc.collect()
    assert sent(shared_batches.SharedBatch({"rgb": [torch.ones(4, dtype=torch.uint8)]}, {}))["rgb"].sum() == 4
    assert worker not in {pid for pid, _ in shared_batches._mapped}  # its worker is gone: its memory is let go


class Numbered(IterableDataset):
    """Batches of clips whose bytes are a function of the batch's number: checkable anywhere, with no shards."""

    def __init__(self, count: int):
        self.count = count

    def __iter__(self):
        info = get_worker_info()  # each worker its share of the numbers
        for k in range(info.id if info else 0, self.count, info.num_workers if info else 1):
            yield shared_batches.batch({"rgb": numbered(k)}, {"number": k})


def numbered(k: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(k)
    return [torch.randint(256, (4, 64, 64, 3), dtype=torch.uint8, generator=generator) for _ in range(5)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_reach_the_gpu_from_page_locked_slots_byte_for_byte():
    torch.cuda.init()
    count, on_gpu = 4 * shared_batches.KEEP, []
    for b in loader(Numbered(count), workers=2):
        assert b["rgb"].is_pinned()  # the slot itself, page-locked once: no copy into pinned memory
        on_gpu.append((b["number"], b["rgb"].to("cuda", non_blocking=True)))
        del b  # freed while its copy may still run: its slot waits for the copy
    torch.cuda.synchronize()
    assert sorted(k for k, _ in on_gpu) == list(range(count))
    for k, clips in on_gpu:
        assert torch.equal(clips.cpu(), torch.stack(numbered(k))), k
    assert shared_batches._mapped and all(m.pinned for m in shared_batches._mapped.values())


def test_outside_a_worker_a_batch_is_plain_tensors():
    batch = shared_batches.batch({"rgb": [torch.ones(2, 2, dtype=torch.uint8)] * 3}, {"key": ["a", "b", "c"]})
    assert isinstance(batch, dict) and batch["rgb"].shape == (3, 2, 2) and batch["key"] == ["a", "b", "c"]
