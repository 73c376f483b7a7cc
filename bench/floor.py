"""The build's floor as a whole process: what no way of storing frames and TG as JPEGs can skip, and nothing else.

Run by bench/prep.py, as the paper's passes are (bench/paper_tools.py): python bench/floor.py VIDEO...
Over a pool of all cores, one video at a time, longest first as given: every frame decoded to JPEG's planes
(tgprep.video.VideoStream.pictures, as the build reads them), TG's planes, and the two JPEGs of each frame (the
build's own encoder, tgprep.sample._jpeg), dropped. No tar, no metadata, no manifests. Prints the frames.
"""

import argparse
import os
from multiprocessing import Pool
from pathlib import Path

from tgprep import planes
from tgprep.config import BuildConfig
from tgprep.sample import _jpeg
from tgprep.video import VideoStream


def floor(path: Path, quality: int = BuildConfig.quality) -> int:
    previous, count = None, 0
    with VideoStream(path, short_side=0) as stream:
        for picture in stream.pictures():
            if previous is not None:
                _jpeg(previous, quality)
                _jpeg(planes.difference(previous, picture), quality)
            previous, count = picture, count + 1
    _jpeg(previous, quality)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    args = parser.parse_args()
    with Pool(os.cpu_count()) as pool:
        print(sum(pool.imap(floor, args.videos, chunksize=1)))


if __name__ == "__main__":
    main()
