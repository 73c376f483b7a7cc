"""The dataset adapters, by name, and scan(): the one entry point that turns a BuildConfig into a Listing."""

from pathlib import Path

from tgprep.config import BuildConfig
from tgprep.datasets import folder, hmdb51, kinetics400, synthetic, ucf101
from tgprep.datasets.common import Listing, check_unique_keys, set_aside_unusable
from tgprep.errors import UserError

ADAPTERS = {"hmdb51": hmdb51, "ucf101": ucf101, "kinetics400": kinetics400, "folder": folder, "synthetic": synthetic}


def scan(config: BuildConfig) -> Listing:
    """What the dataset lists and what of it is on disk. Missing videos are reported, not judged: build decides.
    Videos on disk that cannot be built (see common.unusable_reason) are set aside with their reason."""
    adapter = ADAPTERS.get(config.dataset)
    if adapter is None:
        raise UserError(f"--dataset {config.dataset!r}: unknown; choose one of {', '.join(ADAPTERS)}")
    root = Path(config.root)
    if not config.root or not root.is_dir():
        raise UserError(f"{root}: no such folder; point --root at the folder holding the {config.dataset} videos")
    listing = adapter.scan(config)
    check_unique_keys(listing.train + listing.val + listing.missing)
    set_aside_unusable(listing)
    return listing
