"""The built-in synthetic dataset (written by `tgprep synth`): HMDB-51's layout with its own classes.txt."""

from pathlib import Path

from tgprep.config import BuildConfig
from tgprep.datasets.common import Listing, read_lines
from tgprep.datasets.hmdb51 import scan_split_lists
from tgprep.errors import UserError

DESCRIPTION = """\
The synthetic motion dataset that `tgprep synth --out DIR` writes, laid out like HMDB-51:
<class>/<video>.avi, testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt (ids 1 train,
2 test, 0 unused) and classes.txt (one class per line, in label order) in --root.
--split 1|2|3 and --pool all-non-test|official as for hmdb51; no manifest check."""


def scan(config: BuildConfig) -> Listing:
    path = Path(config.root) / "classes.txt"
    if not path.is_file():
        raise UserError(f"{path}: not found; --root must be a folder written by `tgprep synth`")
    classes = [line for _, line in read_lines(path)]
    return scan_split_lists(config, "synthetic", classes, str(path), expected=None)
