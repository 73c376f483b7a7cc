"""tgtrain.shared_batches: batches in reused worker memory arrive whole and are never written while held."""

import gc
import os
import signal

import torch

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
    it = iter(loader(stream(urls, epoch_batches=2, size=40), workers=1))
    held = next(it)
    try:
        os.kill(it._workers[0].pid, signal.SIGKILL)
        it._workers[0].join(10)  # the signal reaches this process before the join returns
    except RuntimeError as e:  # torch's SIGCHLD handler says so
        assert "killed by signal" in str(e)
    assert not it._workers[0].is_alive()
    assert torch.equal(held["rgb"], alone["rgb"]) and torch.equal(held["tg"], alone["tg"])
    del it


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


def test_a_worker_keeps_at_most_keep_slots_however_many_batches_are_held():
    del shared_batches._slots[:]
    gc.collect()
    clips = [torch.zeros(8, dtype=torch.uint8)]
    held = [sent(shared_batches.SharedBatch({"rgb": clips}, {})) for _ in range(2 * shared_batches.KEEP)]
    assert len(shared_batches._slots) == shared_batches.KEEP
    assert all(torch.equal(h["rgb"], torch.zeros(1, 8, dtype=torch.uint8)) for h in held)
    del held
    assert open_slot_files() == 2 * shared_batches.KEEP  # the kept slots' own; the others closed once sent


def test_outside_a_worker_a_batch_is_plain_tensors():
    batch = shared_batches.batch({"rgb": [torch.ones(2, 2, dtype=torch.uint8)] * 3}, {"key": ["a", "b", "c"]})
    assert isinstance(batch, dict) and batch["rgb"].shape == (3, 2, 2) and batch["key"] == ["a", "b", "c"]
