"""Which JPEG settings store TG and RGB frames best: bytes, error against the exact frames, encode and decode time.

Run from the project root: python bench/tg_encoding.py [--frames N]
The real HMDB-51 and UCF-101 clips of ../shared/realdata (240p, kept at native size as the paper does).
TG rows: mean absolute error against the exact int16 difference x[t+1] - x[t]. RGB rows: PSNR against the
decoded frames. Times are medians per frame; ratios are against the first row of each table, same run.
"""

import argparse
import io
import time
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

from tgprep.video import decode

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
CLIPS = [
    "hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi",
    "hmdb51/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
    "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
    "hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi",
    "ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi",
    "ucf101/SoccerJuggling/v_SoccerJuggling_g24_c01.avi",
]


def jpeg(image: np.ndarray, quality: int, subsampling: int, optimize: bool) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality, subsampling=subsampling, optimize=optimize)
    return out.getvalue()


def png(image: np.ndarray, *_settings) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG", compress_level=1)
    return out.getvalue()


def unpack(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# TG rows: (name, stored uint8 from d, d from stored, codec, quality, subsampling 0=4:4:4 2=4:2:0, optimize)
PAPER = ("paper (d+255)//2, q95 4:2:0", lambda d: (d + 255) // 2, lambda x: x * 2.0 - 255, jpeg, 95, 2, False)
HALF = (lambda d: np.clip(np.round(d / 2) + 128, 0, 255), lambda x: x * 2.0 - 256)
FULL = (lambda d: np.clip(d, -128, 127) + 128, lambda x: x - 128.0)
GREY = (lambda d: np.repeat(np.clip(d.mean(-1, keepdims=True).round(), -128, 127) + 128, 3, -1), lambda x: x - 128.0)
TG_ROWS = [
    PAPER,
    ("round(d/2)+128, q95 4:2:0", *HALF, jpeg, 95, 2, False),
    ("round(d/2)+128, q90 4:2:0", *HALF, jpeg, 90, 2, False),
    ("clip(d)+128, PNG (clipping alone)", *FULL, png, 0, 0, False),
    ("clip(d)+128, q85 4:2:0", *FULL, jpeg, 85, 2, False),
    ("clip(d)+128, q90 4:2:0", *FULL, jpeg, 90, 2, False),
    ("clip(d)+128, q90 4:2:0 optimize", *FULL, jpeg, 90, 2, True),
    ("clip(d)+128, q90 4:4:4", *FULL, jpeg, 90, 0, False),
    ("clip(d)+128, q95 4:2:0", *FULL, jpeg, 95, 2, False),
    ("clip(d)+128, q95 4:4:4", *FULL, jpeg, 95, 0, False),
    ("clip(d)+128, q98 4:4:4", *FULL, jpeg, 98, 0, False),
    ("grey clip(mean d)+128, q95 4:4:4", *GREY, jpeg, 95, 0, False),
]
# RGB rows: (name, quality, subsampling, optimize); the first is the paper's folder layout (OpenCV's q95 4:2:0)
RGB_ROWS = [
    ("q95 4:2:0 (paper's folders)", 95, 2, False),
    ("q95 4:2:0 optimize", 95, 2, True),
    ("q90 4:2:0", 90, 2, False),
    ("q95 4:4:4", 95, 0, False),
    ("q90 4:4:4", 90, 0, False),
    ("q91 4:4:4", 91, 0, False),
    ("q92 4:4:4", 92, 0, False),
    ("q92 4:4:4 optimize", 92, 0, True),
]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def tg_row(diffs: list[np.ndarray], to_stored, from_stored, codec, quality, subsampling, optimize) -> dict:
    size = err = count = 0
    enc, dec = [], []
    for d in diffs:
        stored = to_stored(d).astype(np.uint8)
        data, t_enc = timed(codec, stored, quality, subsampling, optimize)
        back, t_dec = timed(lambda b: from_stored(unpack(b)), data)
        size, err, count = size + len(data), err + np.abs(back - d).sum(), count + d.size
        enc.append(t_enc)
        dec.append(t_dec)
    return {"kb": size / len(diffs) / 1000, "err": err / count, "enc": median(enc), "dec": median(dec)}


def rgb_row(frames: list[np.ndarray], quality, subsampling, optimize) -> dict:
    size, sq, enc, dec, back = 0, 0.0, [], [], []
    for x in frames:
        data, t_enc = timed(jpeg, x, quality, subsampling, optimize)
        y, t_dec = timed(unpack, data)
        size, sq = size + len(data), sq + ((y.astype(np.float64) - x) ** 2).mean()
        enc.append(t_enc)
        dec.append(t_dec)
        back.append(y)
    psnr = 10 * np.log10(255**2 / (sq / len(frames)))
    return {"kb": size / len(frames) / 1000, "psnr": psnr, "enc": median(enc), "dec": median(dec), "back": back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="at most this many frames per clip")
    args = parser.parse_args()
    clips = [decode(VIDEOS / c, short_side=0).frames[: args.frames + 1] for c in CLIPS]
    frames = [x for clip in clips for x in clip[:-1]]
    diffs = [d for clip in clips for d in (clip[1:].astype(np.int16) - clip[:-1])]
    big = sum((np.abs(d) > 127).sum() for d in diffs) / sum(d.size for d in diffs)
    print(f"{len(CLIPS)} clips, {len(diffs)} TG frames at 240p; |d| > 127: {big:.3%} of values\n")

    print("| RGB setting | KB/frame | x bytes | PSNR dB | encode ms | decode ms | TG from these JPEGs: MAE |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ref = None
    for name, *settings in RGB_ROWS:
        r = rgb_row(frames, *settings)
        ref = ref or r
        # TG a loader could derive from the stored RGB of each clip's consecutive frames
        pos, derived = 0, []
        for clip in clips:
            back = r["back"][pos : pos + len(clip) - 1]
            derived += [np.abs(b.astype(np.int16) - a - d).mean() for a, b, d in zip(back, back[1:], diffs[pos:])]
            pos += len(clip) - 1
        print(f"| {name} | {r['kb']:.1f} | {r['kb'] / ref['kb']:.2f} | {r['psnr']:.2f} | {r['enc'] * 1e3:.2f} | "
              f"{r['dec'] * 1e3:.2f} | {np.mean(derived):.2f} |")

    print("\n| TG encoding | KB/frame | x bytes | MAE | encode ms | decode ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    ref = None
    for name, *settings in TG_ROWS:
        r = tg_row(diffs, *settings)
        ref = ref or r
        print(f"| {name} | {r['kb']:.1f} | {r['kb'] / ref['kb']:.2f} | {r['err']:.2f} | {r['enc'] * 1e3:.2f} | {r['dec'] * 1e3:.2f} |")


if __name__ == "__main__":
    main()
