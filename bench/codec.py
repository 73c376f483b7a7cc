"""JPEG codecs for the shards: Pillow, simplejpeg and PyTurboJPEG, encoding and decoding real frames.

Run from the project root: python bench/codec.py [--frames 48] [--repeats 5]

The frames: the real HMDB-51 / UCF-101 / Kinetics-400 clips of ../shared/realdata at native size, a few frames of
each (tgprep.video.decode), and their TG as the shards store it (clip(d, -128, 127) + 128). For each codec:
  encode RGB   uint8 numpy -> JPEG at quality 90, 4:4:4 (the shards' RGB)
  encode TG    the same at 4:2:0 (the shards' TG)
  decode       the RGB JPEGs back to uint8 numpy, full size
  decode /2    the same with libjpeg's DCT scaling to half size (a 112 crop of 240p frames), /4 likewise
All three wrap libjpeg(-turbo); PyTurboJPEG needs the system's libturbojpeg and is skipped without it. One
thread, CPU seconds per image (time.process_time), medians of --repeats rounds in which the codecs take
turns; x = Pillow's time / the codec's. The decoders also say the largest difference from Pillow's pixels.
"""

import argparse
import io
import platform
import time
from pathlib import Path
from statistics import median

import numpy as np
import simplejpeg
from PIL import Image

from tgprep.video import decode

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
QUALITY = 90


def frames(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` RGB frames of the real clips and their stored TG, spread over the clips."""
    sources = sorted(p for d in ("hmdb51", "ucf101", "kinetics400") for p in (VIDEOS / d).rglob("*")
                     if p.suffix in (".avi", ".mp4"))
    per = max(1, count // max(1, len(sources)))
    rgb, tg = [], []
    for source in sources:
        x = decode(source, short_side=0).frames
        for i in np.linspace(0, len(x) - 2, per).astype(int):
            rgb.append(x[i])
            tg.append((np.subtract(x[i + 1], x[i], dtype=np.int16).clip(-128, 127) + 128).astype(np.uint8))
    return rgb[:count], tg[:count]


def pillow() -> dict:
    def encode(image, subsampling):
        out = io.BytesIO()
        Image.fromarray(image).save(out, "JPEG", quality=QUALITY, subsampling={"444": 0, "420": 2}[subsampling])
        return out.getvalue()

    def decode_(data, reduce):
        image = Image.open(io.BytesIO(data))
        if reduce > 1:
            image.draft("RGB", (image.size[0] // reduce, image.size[1] // reduce))
        return np.asarray(image)
    return {"encode": encode, "decode": decode_}


def simple() -> dict:
    def decode_(data, reduce):
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        return simplejpeg.decode_jpeg(data, "rgb", min_height=-(-h // reduce), min_width=-(-w // reduce))
    return {"encode": lambda image, sub: simplejpeg.encode_jpeg(image, QUALITY, "rgb", sub), "decode": decode_}


def turbo() -> dict | None:
    try:
        import turbojpeg
        jpeg = turbojpeg.TurboJPEG()
    except Exception:  # not installed, or no libturbojpeg it can load: it says so in several ways
        return None
    sub = {"444": turbojpeg.TJSAMP_444, "420": turbojpeg.TJSAMP_420}
    return {"encode": lambda image, s: jpeg.encode(image, quality=QUALITY, pixel_format=turbojpeg.TJPF_RGB,
                                                   jpeg_subsample=sub[s]),
            "decode": lambda data, reduce: jpeg.decode(data, pixel_format=turbojpeg.TJPF_RGB,
                                                       scaling_factor=None if reduce == 1 else (1, reduce))}


def cpu_per_image(fn, items) -> float:
    start = time.process_time()
    for item in items:
        fn(item)
    return (time.process_time() - start) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rgb, tg = frames(args.frames)
    codecs = {"Pillow": pillow(), "simplejpeg": simple(), "PyTurboJPEG": turbo()}
    if codecs["PyTurboJPEG"] is None:
        print("PyTurboJPEG skipped: not installed, or the system's libturbojpeg is missing or too old for it")
    codecs = {name: c for name, c in codecs.items() if c is not None}
    jpegs = [pillow()["encode"](x, "444") for x in rgb]
    reference = {r: [pillow()["decode"](j, r) for j in jpegs] for r in (1, 2, 4)}
    tasks = {"encode RGB 4:4:4": lambda c: cpu_per_image(lambda x: c["encode"](x, "444"), rgb),
             "encode TG 4:2:0": lambda c: cpu_per_image(lambda x: c["encode"](x, "420"), tg),
             **{f"decode /{r}" if r > 1 else "decode": (lambda c, r=r: cpu_per_image(lambda j: c["decode"](j, r), jpegs))
                for r in (1, 2, 4)}}
    times = {(t, c): [] for t in tasks for c in codecs}
    for _ in range(args.repeats):
        for task, fn in tasks.items():
            for name, codec in codecs.items():
                times[task, name].append(fn(codec))
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{len(rgb)} real frames of {rgb[0].shape[1]}x{rgb[0].shape[0]} and larger, q{QUALITY}, one thread, "
          f"medians of {args.repeats} interleaved rounds")
    print("| task | " + " | ".join(f"{c} CPU ms | x" for c in codecs) + " |")
    print("| --- | " + " | ".join("--- | ---" for _ in codecs) + " |")
    for task in tasks:
        base = median(times[task, "Pillow"])
        print(f"| {task} | " + " | ".join(f"{median(times[task, c]) * 1e3:.3f} | {base / median(times[task, c]):.2f}"
                                          for c in codecs) + " |")
    for name, codec in codecs.items():
        diffs = {r: max(int(np.abs(codec["decode"](j, r).astype(int) - ref).max()) if codec["decode"](j, r).shape
                        == ref.shape else 999 for j, ref in zip(jpegs, reference[r])) for r in reference}
        sizes = sum(len(codec["encode"](x, "444")) for x in rgb) / sum(len(j) for j in jpegs)
        print(f"{name}: largest difference from Pillow's decode {diffs} (999: another size); "
              f"RGB bytes {sizes:.3f}x Pillow's")


if __name__ == "__main__":
    main()
