"""The paper's own data tools, the reference that bench/prep.py and bench/loader.py measure against.

The reference code (lambert-x/video-semisup) prepares HMDB-51 / UCF-101 with tools/data/build_rawframes.py and
then tools/data/build_rawframes_temporal_gradient.py, each over a multiprocessing pool, and trains from the
folders they leave. Both go through mmcv, which is OpenCV underneath; here is the same work in OpenCV directly:
  pass 1  cv2.VideoCapture, every frame cv2.imwrite-n to <folder>/img_00001.jpg ... (OpenCV's default JPEG:
          quality 95, 4:2:0);
  pass 2  cv2.imread of each pair of neighbours, tempgrad_0000i.jpg = uint8((img_i - img_{i+1} + 255) / 2)
          in float32, as the script does (its sign: previous minus next);
  loading cv2.imread of the 8 img and 8 tempgrad files of a clip, as the reference's RawFrameDecode does.
The frames stay in OpenCV's BGR order: the reference swaps them later, on floats, in its normalisation.
Needs the bench extra: pip install -e '.[bench]' (opencv-python-headless).

As the reference's scripts run, each pass a whole process over a pool of all cores (bench/prep.py times these):
  python bench/paper_tools.py rgb VIDEO... --out FOLDER...   (pass 1, one output folder per video)
  python bench/paper_tools.py tg FOLDER...                     (pass 2)
Each prints the frames it handled. The videos go to the pool one at a time in the order given (bench/prep.py
gives the longest first, so the workers end together: kinder to the reference than its pool.map of glob order).
"""

import argparse
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np

try:
    import cv2
except ImportError:
    raise SystemExit("bench/paper_tools.py: OpenCV is missing; pip install -e '.[bench]'") from None


def write_frames(path: Path, folder: Path) -> int:
    """Pass 1: every frame of the video as img_00001.jpg ... ; returns the frame count."""
    folder.mkdir(parents=True)
    capture, count = cv2.VideoCapture(str(path)), 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            cv2.imwrite(str(folder / f"img_{count:05d}.jpg"), frame)
    finally:
        capture.release()
    return count


def write_tg(folder: Path) -> int:
    """Pass 2: tempgrad_00001.jpg ... from the neighbours in the folder; returns the img files read, so that
    both passes count the same frames."""
    files = sorted(folder.glob("img_*.jpg"))
    before = cv2.imread(str(files[0]))
    for i, file in enumerate(files[1:], 1):
        current = cv2.imread(str(file))
        grad = (before.astype(np.float32) - current.astype(np.float32) + 255.0) / 2.0
        cv2.imwrite(str(folder / f"tempgrad_{i:05d}.jpg"), grad.astype(np.uint8))
        before = current
    return len(files)


def read_clip(folder: Path, numbers) -> dict[str, np.ndarray]:
    """The img and tempgrad frames of a clip (1-based file numbers), each (T, H, W, 3) uint8 in BGR."""
    return {m: np.stack([cv2.imread(str(folder / f"{prefix}_{i:05d}.jpg")) for i in numbers])
            for m, prefix in (("rgb", "img"), ("tg", "tempgrad"))}


def main() -> None:
    parser = argparse.ArgumentParser(description="The paper's two data passes, each over a pool of all cores.")
    parser.add_argument("task", choices=["rgb", "tg"])
    parser.add_argument("paths", nargs="+", type=Path, help="videos (rgb) or their frame folders (tg)")
    parser.add_argument("--out", nargs="+", type=Path, default=[], help="rgb: a frame folder per video")
    args = parser.parse_args()
    with Pool(os.cpu_count()) as pool:
        if args.task == "rgb":
            counts = pool.starmap(write_frames, zip(args.paths, args.out, strict=True), chunksize=1)
        else:
            counts = pool.map(write_tg, args.paths, chunksize=1)
    print(sum(counts))


if __name__ == "__main__":
    main()
