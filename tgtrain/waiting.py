"""How long the training step waits on its data, and the warning when that is more than a fifth of an epoch (from a
run's second epoch: its first holds the loader workers' start-up, which more workers would only lengthen).

A loader with too few workers starves the model: the step then waits for each batch, and adding loader processes
(`--workers`) is what helps, up to one per free core (tgtrain.data's docstring gives clips per CPU second).
"""

import time


class Timed:
    """An iterable's items, adding up in `waited` how long each took to arrive: the time the training step
    spent waiting on data."""

    def __init__(self, items):
        self.items, self.waited = items, 0.0

    def __iter__(self):
        items = iter(self.items)
        while True:
            start = time.perf_counter()
            item = next(items, None)
            self.waited += time.perf_counter() - start
            if item is None:
                return
            yield item


STARVED = 0.2  # of an epoch spent waiting on data, past which `tgtrain run` says so, once


def starved(waited: float, seconds: float, workers: int) -> str | None:
    """The warning for an epoch of `seconds` that waited `waited` on its batches, when that is over STARVED."""
    if waited <= STARVED * seconds:
        return None
    return (f"warning: the training step waited on data for {waited / seconds:.0%} of the epoch; more loader "
            f"processes would feed it faster: --workers {workers} now, up to one per free core (see README)")
