"""The bounds on untrusted bytes (shards, sidecars, dataset.json, list files), each checked before anything
is allocated from it, and the small helpers that check them.

A shard from a stranger can claim anything in its headers and its .json: a 10 TB member, a 10^9 x 10^9
frame, a label of 10^30, JSON nested a million deep. Readers check sizes against these limits and against
the file itself first, then parse, then check the parsed values, so that such a shard fails in one line and
in bounded memory. The helpers raise ValueError with the reason only; callers add the file and the member.
"""

import io
import json
import os

# A sample's .json grows by about 25 bytes per frame (an original frame number and two offsets): 1 MiB holds
# some 40 000 frames, 22 minutes at 30 fps, while an HMDB-51 or Kinetics clip needs 3 to 10 KB.
MAX_SAMPLE_JSON_BYTES = 1 << 20
# .cls holds a class number: a few digits.
MAX_CLS_BYTES = 32
# The sample members a reader keeps and the most bytes each may have. .rgb and .tg are bounded by the file
# itself (their frames are read one at a time, from a memory map in the trainer); any other member is
# skipped unread, so its size costs nothing.
MEMBER_BYTES = {"json": MAX_SAMPLE_JSON_BYTES, "cls": MAX_CLS_BYTES}
# dataset.json lists per-class counts and notes; Kinetics-400's is about 60 KB.
MAX_DATASET_JSON_BYTES = 16 << 20
# A sidecar lists its shard's keys and failures: ~100 entries of ~100 bytes by default, generous for 10 000.
MAX_SIDECAR_BYTES = 16 << 20
# Our JSON files nest 4 levels at most; anything deeper is not ours (and deep enough nesting crashes parsers).
MAX_JSON_DEPTH = 16
# A labeled list or split file: Kinetics-400's train CSV is 10 MB for 240 000 clips.
MAX_LIST_BYTES = 256 << 20
# Frame sides and pixels per frame: 2^22 pixels (2048 x 2048, above 2560 x 1440) make a 16-frame uint8
# RGB clip of 201 MB, so a clip decoded from any frame size a reader accepts stays well under 500 MB.
MAX_SIDE = 16384
MAX_PIXELS = 1 << 22
# A baseline JPEG with its tables takes about 125 bytes at the very least (Pillow's smallest, 1x1 at quality
# 1, is 630): a payload of N bytes cannot hold more than N / 100 frames, whatever the .json says.
MIN_JPEG_BYTES = 100
# A shard from a remote place is fetched whole into the node cache: an index entry or a listing claiming more
# than this is refused before a byte is fetched (a shard of 100 ten-minute videos is about 50 GB).
MAX_SHARD_BYTES = 1 << 40
# Class numbers: Kinetics-700 has 700 classes; more than this is not a label but a number out of range.
MAX_CLASSES = 100_000


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise ValueError(f"{size} bytes, over the limit of {limit} bytes")


def check_member(field: str, offset: int, size: int, file_size: int) -> None:
    """Refuse a tar member whose header claims more bytes than the file holds, or than its field may have."""
    if offset + size > file_size:
        raise ValueError(f"runs past the end of the file: {size} bytes at offset {offset} of {file_size} (truncated)")
    if size > MEMBER_BYTES.get(field, size):
        raise ValueError(f"is {size} bytes, over the limit of {MEMBER_BYTES[field]} bytes for a .{field}")


def parse_json(raw: bytes | memoryview | str, limit: int, depth: int | None = MAX_JSON_DEPTH):
    """JSON text, parsed only after its size is checked; nesting deeper than the parser's recursion (caught)
    or than `depth` (checked after parsing, without recursion; None skips it) is refused."""
    check_size(len(raw), limit)
    try:
        value = json.loads(raw.tobytes() if isinstance(raw, memoryview) else raw)
    except RecursionError:
        raise ValueError("nested too deep to parse") from None
    except (ValueError, TypeError) as e:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"not valid JSON ({e})") from None
    if depth is not None and nesting(value) > depth:
        raise ValueError(f"nested more than {depth} levels deep")
    return value


def read_bytes(path, limit: int) -> bytes:
    """A file's bytes after a stat: a file over the limit is never read."""
    with open(path, "rb") as f:
        check_size(os.fstat(f.fileno()).st_size, limit)
        return f.read(limit + 1)


def read_json(path, limit: int, depth: int | None = MAX_JSON_DEPTH):
    """A JSON file, parsed by parse_json after a stat: a file over the limit is never read."""
    return parse_json(read_bytes(path, limit), limit, depth)


def nesting(value) -> int:
    """How many levels of lists and dicts a parsed JSON value has (0 for a scalar), without recursion."""
    deepest, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, (list, dict))]
        if containers:
            deepest += 1
        level = [child for v in containers for child in (v.values() if isinstance(v, dict) else v)]
    return deepest


def count(value, name: str, low: int = 0, high: int | None = None) -> int:
    """A whole number in [low, high] (bools are not numbers here); ValueError names the field otherwise."""
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} is {_short(value)}, not a whole number {bound}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class BoundedFile(io.FileIO):
    """A binary file whose read(n) never asks for more than the file holds past its position.

    The standard tarfile reads a pax header's whole declared size at once: a header claiming 100 GB makes the
    buffered file allocate 100 GB before the read finds 1 KB. Capped reads make such a header a short read,
    which tarfile reports as a damaged archive."""

    def __init__(self, path):
        super().__init__(path, "r")
        self.size = os.fstat(self.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            size = min(size, max(self.size - self.tell(), 0))
        return super().read(size)
