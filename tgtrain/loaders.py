"""The data loaders of a training run, made once and kept for all its epochs: the labeled and unlabeled training
streams, PreciseBN's clean clips and each network's validation views.

Each DataLoader with workers starts processes that import torch and open their shards. Made anew for every epoch,
for every PreciseBN and for every validation, as they once were, that start-up was paid up to five times per epoch
(bench/train_step.py measures it). These keep their workers (persistent_workers, see tgtrain.data.loader): a new
pass over a loader only tells its workers to start their next pass. A TrainStream counts its passes, so the draws
stay a function of the pass: training epoch e is pass e of the training streams, the k-th PreciseBN of a run is
pass k of its stream, and a resumed run makes its loaders at the counts an uninterrupted run would have reached.
"""

from tgtrain import data


def precise_bn_stream(config, pool_urls, modalities, classes: int, passes_done: int = 0):
    """PreciseBN's batches: precise_bn_batches of clean training-pool clips per pass and rank (a resampled stream:
    the same count on every rank, other clips at each pass), at load_size, for the caller to centre-crop."""
    # area 1: no box of the whole frame's area fits a drawn aspect ratio, so every clip gets the fallback, the
    # centred square: with the centre crop, the reference's val view (the flip does not change BN's statistics)
    return data.train_stream(pool_urls, batch_size=config.batch_size, clip_len=config.clip_len,
                             interval=config.frame_interval, size=config.load_size, area=(1.0, 1.0),
                             modalities=tuple(modalities), labeled=False, epoch_batches=config.precise_bn_batches,
                             seed=2 * config.seed + 2, epoch=passes_done, classes=classes)


def val_stream(config, val_urls, modality: str, classes: int):
    """One centre clip per val video at load_size (the reference's val pipeline crops it to the training size)."""
    return data.eval_stream(val_urls, batch_size=config.batch_size * 2, clip_len=config.clip_len,
                            interval=config.frame_interval, size=config.load_size, clips=1, crops=1,
                            modality=modality, classes=classes)


class RunLoaders:
    """The run's loaders. epoch() gives one epoch of (labeled, unlabeled) batch pairs (unlabeled None for the
    supervised method); precise_bn() one PreciseBN pass; val(modality) one pass over the val views."""

    def __init__(self, config, method, labeled_urls, pool_urls, val_urls, steps: int, epoch: int, classes: int,
                 precise_bn_done: int = 0):
        common = dict(batch_size=config.batch_size, clip_len=config.clip_len, interval=config.frame_interval,
                      size=config.size, area=(config.crop_area, 1.0), modalities=method.modalities,
                      epoch_batches=steps, epoch=epoch, classes=classes)
        workers = config.workers
        self.labeled = data.loader(data.train_stream(labeled_urls, labeled=True, seed=2 * config.seed, **common),
                                   workers)
        self.unlabeled = None
        if method.uses_unlabeled:
            self.unlabeled = data.loader(data.train_stream(pool_urls, labeled=False, seed=2 * config.seed + 1,
                                                           **common), workers)
        self._precise_bn = None
        if config.precise_bn_batches:
            self._precise_bn = data.loader(precise_bn_stream(config, pool_urls, method.modalities, classes,
                                                             precise_bn_done), workers)
        self._val = {m: data.loader(val_stream(config, val_urls, m, classes), workers) for m in method.modalities}

    def epoch(self):
        if self.unlabeled is None:
            return ((batch, None) for batch in self.labeled)
        return zip(self.labeled, self.unlabeled)

    def precise_bn(self):
        return iter(self._precise_bn)

    def val(self, modality: str):
        return iter(self._val[modality])
