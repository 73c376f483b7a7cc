"""tgprep: turn action-recognition video datasets into temporal-gradient WebDataset shards."""

__version__ = "0.1.0"
