"""Streams of uint8 clip batches from tgprep shards: resampled for training, exactly once for evaluation.

A stream is a chain of small generators, run once per DataLoader worker:

  train: resampled shards (seeded per rank, worker and pass) -> fetched
         -> samples -> shuffle buffer -> clip (decode only its frames) -> random resized crop, flip -> batch
  eval:  the shards split by rank and by worker -> fetched -> samples -> clips x crops -> batch

fetched passes local tars on and brings remote ones (s3://, gs://, http(s)://) into the node cache first, whole and
checked, the next one while this one is read (tgprep.storage): after it, every shard is a local file, read the same.

The stages follow webdataset's, with two of its parts replaced, for measured reasons:
- Shards are read memory-mapped (tgtrain.shards): a sample's frame payloads are views of the tar that the disk delivers only
  when a clip slices its JPEGs out of them, so a clip reads its 16 frames, not the whole video, and the
  shuffle buffer holds views, not megabytes. On shards of the real clips: 0.1 ms per sample against 9.6 ms
  for webdataset's tar reader, which reads and copies every byte; 9 ms against 18 ms per clip with decoding.
- The rank is read when a stream is made, in the training process: DataLoader workers may be spawned (they
  are under torch.multiprocessing.spawn), and there torch.distributed is not initialised, so webdataset's
  split_by_node, which asks from inside the worker, gave every rank the same shards.

Throughput, to size --workers (bench/loader.py, BENCHMARKS.md): one worker delivers about 115-150 training clips of
8 RGB + 8 TG frames per CPU second from 240p shards with the weak view at 224, and 175-230 at 112 (DCT-scaled
decoding); most of it is JPEG decoding (libjpeg-turbo), then the weak view's resize. Batches reach the training
process in shared memory that the worker writes again once freed (tgtrain.shared_batches), not in a new file per
tensor, which cost about a fifth of a worker's time. A GPU that trains on C clips/s needs about C / 130 worker cores at 224.

Training streams never end on their own: each rank yields exactly `epoch_batches` batches per pass, shared
among its workers, so ranks under DDP take the same number of steps whatever the shard sizes. Shard bytes
are untrusted: they are parsed by tgprep.sample, never unpickled, and a malformed sample raises SampleError.
"""

import os
from itertools import islice

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from tgprep.sample import SampleError, decode_frames, read_cls
from tgprep.video_decode import clip_frames
from tgprep.video_sample import is_video, read_meta  # read_meta reads both kinds of sample
from tgtrain import shared_batches
from tgtrain.clips import choose_reduce, crop_box, resized_crop, test_views, train_indices
from tgtrain.shards import FIX, fetched, shard_urls, tar_samples  # noqa: F401 (shard_urls: callers find it here)

WORKER_TIMEOUT = 600  # seconds to wait for a batch from a loader worker, which makes one in well under a second
SHUFFLE = 256         # samples in a training stream's shuffle buffer


# -- frames ------------------------------------------------------------------------------------------------

def reduce_for(meta: dict, size: int, reduce: int | None) -> int:
    """The given reduction, or by default the largest that still decodes this video's short side to >= size."""
    return choose_reduce(min(meta["width"], meta["height"]), size) if reduce is None else reduce


def frames_at(sample: dict, meta: dict, modality: str, indices: np.ndarray, reduce: int) -> np.ndarray:
    """The frames at indices (meta: the sample's, read once); a short video's repeated frames are decoded once."""
    unique, inverse = np.unique(indices, return_inverse=True)
    if len(unique) == len(indices):
        return decode_frames(sample, modality, indices.tolist(), reduce, meta)
    return decode_frames(sample, modality, unique.tolist(), reduce, meta)[inverse]


def parse(sample: dict, labeled: bool, classes: int | None = None) -> tuple[dict, int, int]:
    """(meta, label for the loss: .cls or -1, true label from the .json for monitoring only) below `classes`."""
    meta = read_meta(sample, classes)
    return meta, read_cls(sample, meta) if labeled else -1, meta["label"]


# -- stream stages -----------------------------------------------------------------------------------------

def resampled(urls: list[str], rng: np.random.Generator):
    """Shards drawn uniformly with replacement, forever. Every draw yields all of a shard's samples, so each
    sample comes as often as any other, whatever the shard sizes."""
    while True:
        yield {"url": urls[rng.integers(len(urls))]}


def shuffled(items, size: int, rng: np.random.Generator):
    """A shuffle buffer: once `size` items are held, each new one swaps out a random held one."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = rng.integers(size)
        yield buffer[k]
        buffer[k] = item
    rng.shuffle(buffer)
    yield from buffer


def batched(items, size: int, partial: bool):
    """Lists of `size` items; the last, shorter list only when partial."""
    items = iter(items)
    while batch := list(islice(items, size)):
        if len(batch) < size and not partial:
            return
        yield batch


def collate(clips: list[dict], arrays: tuple[str, ...]):
    """One batch: arrays stacked into uint8 tensors, labels into int64 tensors, keys into a list; in a worker,
    stacked into shared memory that comes back to it (tgtrain.shared_batches)."""
    rest = {name: torch.tensor([c[name] for c in clips], dtype=torch.int64)
            for name in ("label", "true_label") if name in clips[0]}
    rest["key"] = [c["key"] for c in clips]
    return shared_batches.batch({name: [torch.from_numpy(c[name]) for c in clips] for name in arrays}, rest)


def node() -> tuple[int, int]:
    """(rank, world size): torch.distributed's when initialised, else torchrun's environment, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker() -> tuple[int, int]:
    """(this DataLoader worker's number, the number of workers), or (0, 1) outside a worker."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def share(total: int, number: int, workers: int) -> int:
    """Worker `number`'s part of `total` batches, so that the parts of all workers add up to total."""
    return total // workers + (number < total % workers)


def in_shard(sample: dict, error: SampleError) -> SampleError:
    """The same error, saying which shard holds the sample and what to do."""
    return SampleError(f"{sample.get('__url__', '?')}: {error}; {FIX}")


# -- training ----------------------------------------------------------------------------------------------

class TrainStream(IterableDataset):
    """Endless resampled clips, cut into passes of epoch_batches batches per rank (see train_stream)."""

    def __init__(self, urls, *, batch_size, clip_len, interval, size, reduce, area, modalities, labeled,
                 epoch_batches, seed, shuffle, epoch, classes):
        self.urls, self.classes = list(urls), classes
        self.batch_size, self.clip_len, self.interval, self.size, self.reduce, self.area = (
            batch_size, clip_len, interval, size, reduce, area)
        self.modalities, self.labeled = tuple(modalities), labeled
        self.epoch_batches, self.seed, self.shuffle = epoch_batches, seed, shuffle
        self.epoch = epoch  # counts passes, so each pass of each rank and worker draws other clips
        self.rank = node()[0]

    def __iter__(self):
        number, workers = worker()
        rng = np.random.default_rng([self.seed, self.rank, number, self.epoch])
        # shards drawn from a generator of their own: fetched draws the next one ahead of time, and must not change
        # what the shuffle and the clips draw, so that remote shards give the batches the same local ones do
        draws = np.random.default_rng([self.seed, self.rank, number, self.epoch, 1])
        self.epoch += 1
        samples = shuffled(tar_samples(fetched(resampled(self.urls, draws))), self.shuffle, rng)
        clips = (self.clip(sample, rng) for sample in samples)
        batches = batched(clips, self.batch_size, partial=False)
        for batch in islice(batches, share(self.epoch_batches, number, workers)):
            yield collate(batch, self.modalities)

    def clip(self, sample: dict, rng: np.random.Generator) -> dict:
        try:
            meta, label, true_label = parse(sample, self.labeled, self.classes)
            # with TG, sample over the TG frames so that every RGB frame of the clip has its TG
            n = meta["tg_frames"] if "tg" in self.modalities else meta["frames"]
            if n < 1:
                raise SampleError(f"sample {sample['__key__']}: no frames")
            indices = train_indices(n, self.clip_len, self.interval, rng)
            reduce = reduce_for(meta, self.size, self.reduce)
            frames = (clip_frames(sample, meta, indices, self.modalities) if is_video(sample)  # TG at load
                      else {m: frames_at(sample, meta, m, indices, reduce) for m in self.modalities})
            # one box and one flip for RGB and TG, so the pair stays aligned
            box = crop_box(*frames[self.modalities[0]].shape[1:3], rng, self.area)
            flip = rng.random() < 0.5
            clip = {m: resized_crop(f, box, self.size, flip) for m, f in frames.items()}
        except SampleError as e:
            raise in_shard(sample, e) from None
        return {**clip, "label": label, "true_label": true_label, "key": sample["__key__"]}


def train_stream(urls, *, batch_size: int, clip_len: int, interval: int, size: int, reduce: int | None = None,
                 area=(0.08, 1.0), modalities=("rgb", "tg"), labeled: bool, epoch_batches: int, seed: int,
                 shuffle: int = SHUFFLE, epoch: int = 0, classes: int | None = None) -> IterableDataset:
    """Training batches from resampled shards: "rgb" (and "tg" when in modalities) uint8 (B, T, S, S, 3),
    "label" int64 (B,) from .cls or -1 when not labeled, "true_label" int64 (B,) from the .json (monitoring
    only), "key" list[str].

    Each clip has the weak augmentation already (tgtrain.clips): a random resized crop over the whole frame
    (its area a fraction of the frame's in `area`), resized to S = size, flipped half of the time, the same
    for its RGB and TG. reduce: JPEG decoding reduction; None picks the largest that keeps each video's
    short side >= size (libjpeg's DCT scaling: a quarter of the work at half size). Each iteration is one
    pass of exactly epoch_batches batches on this rank; `epoch` numbers the first pass (give the epoch to
    resume at, so a resumed run draws the same clips). classes: the dataset's class count; a sample whose
    label is not below it fails as damaged."""
    if not set(modalities) <= {"rgb", "tg"} or not modalities:
        raise ValueError(f"modalities must be some of rgb and tg, not {modalities!r}")
    return TrainStream(urls, batch_size=batch_size, clip_len=clip_len, interval=interval, size=size,
                       reduce=reduce, area=tuple(area), modalities=modalities, labeled=labeled,
                       epoch_batches=epoch_batches, seed=seed, shuffle=shuffle, epoch=epoch, classes=classes)


# -- evaluation --------------------------------------------------------------------------------------------

class EvalStream(IterableDataset):
    """Every video of this rank's and worker's shards once, as clips x crops squares (see eval_stream)."""

    def __init__(self, urls, *, batch_size, clip_len, interval, size, reduce, clips, crops, modality, classes):
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 (centre) or 3 (start, centre, end), not {crops}")
        if modality not in ("rgb", "tg"):
            raise ValueError(f"modality must be rgb or tg, not {modality!r}")
        rank, world = node()
        self.urls = list(urls)[rank::world]
        self.batch_size, self.clip_len, self.interval, self.size, self.reduce = (
            batch_size, clip_len, interval, size, reduce)
        self.clips, self.crops = clips, crops
        self.modality, self.classes = modality, classes

    def __iter__(self):
        number, workers = worker()
        shards = ({"url": url} for url in self.urls[number::workers])
        views = (self.views(sample) for sample in tar_samples(fetched(shards)))
        for batch in batched(views, self.batch_size, partial=True):
            yield collate(batch, (self.modality,))

    def views(self, sample: dict) -> dict:
        try:
            meta, label, _ = parse(sample, labeled=True, classes=self.classes)
            n = meta["tg_frames"] if self.modality == "tg" else meta["frames"]
            if n < 1:
                raise SampleError(f"sample {sample['__key__']}: no frames")
            reduce = reduce_for(meta, self.size, self.reduce)

            def frames_at(unique):
                if is_video(sample):
                    return clip_frames(sample, meta, unique, (self.modality,))[self.modality]
                return decode_frames(sample, self.modality, unique.tolist(), reduce, meta)

            views = test_views(frames_at, n, self.clip_len, self.interval, self.clips, self.crops, self.size)
        except SampleError as e:
            raise in_shard(sample, e) from None
        return {self.modality: views, "label": label, "key": sample["__key__"]}


def eval_stream(urls, *, batch_size: int, clip_len: int, interval: int, size: int, clips: int, crops: int,
                reduce: int | None = None, modality: str = "rgb", classes: int | None = None) -> IterableDataset:
    """Evaluation batches, every video of the shards exactly once over all ranks and workers: "rgb" (or "tg",
    to check LTG's TG network) uint8 (B, crops * clips, T, S, S, 3) with view v = crop * clips + clip,
    "label" int64 (B,), "key" list[str]. The last batch of each worker may be smaller. Shards are split by
    rank, then by worker: a rank or worker left without a shard yields nothing. classes: as for train_stream."""
    return EvalStream(urls, batch_size=batch_size, clip_len=clip_len, interval=interval, size=size,
                      reduce=reduce, clips=clips, crops=crops, modality=modality, classes=classes)


def loader(stream: IterableDataset, workers: int, timeout: float = WORKER_TIMEOUT) -> DataLoader:
    """A DataLoader over a stream that batches itself; workers persist, so each keeps its pass counter. A batch
    that takes longer than `timeout` seconds raises (a worker stuck in a read), where torch would wait forever.
    On CUDA, torch's pin_memory thread receives each batch, off the training thread (its file descriptor comes over
    a socket from the worker); the batches' slots are page-locked already (tgtrain.shared_batches), so it copies
    nothing: pin_memory() returns a pinned tensor as it is."""
    return Loader(stream, workers, timeout)


POLL = 5.0  # seconds between torch's checks that the workers live, while a batch is awaited


class Loader(DataLoader):
    """A DataLoader that waits for each batch in slices of POLL seconds, up to `patience` in all.

    At the end of each slice torch checks that every worker is alive. Its SIGCHLD handler alone misses a worker that
    dies while the loader is still starting the others, and a single wait of `patience` seconds would then sit out
    that death for ten minutes."""

    def __init__(self, stream: IterableDataset, workers: int, patience: float):
        super().__init__(stream, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
                         persistent_workers=workers > 0, timeout=min(POLL, patience) if workers > 0 else 0)
        self.patience = patience

    def _get_iterator(self):
        return _Iterator(self) if self.num_workers else super()._get_iterator()

    def __iter__(self):
        batches, waited = super().__iter__(), 0.0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as e:  # torch's iterator is whole after a timeout: the next call waits on
                if not str(e).startswith("DataLoader timed out"):
                    raise
                waited += self.timeout
                if waited >= self.patience:
                    raise RuntimeError(f"DataLoader timed out after {self.patience:g} seconds") from None
                continue
            waited = 0.0
            yield batch


class _Iterator(_MultiProcessingDataLoaderIter):
    """torch's iterator, whose shutdown also works when a dead worker's SIGCHLD cut its start short: torch's own
    then fails on a list it had not made yet, and prints that traceback after tgtrain's one line."""

    def __del__(self):
        if not hasattr(self, "_workers_status"):
            self._workers_status = [False] * self._num_workers
        super().__del__()
