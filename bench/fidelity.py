"""bench/prep.py's storage table: bytes per frame, and how close stored frames are to the source, against
references that do not count a chroma filter as loss.

A video decodes to Y, Cb and Cr planes; RGB is made from them with some chroma upsampling,
which differs between libswscale (tgprep.video.decode, the ffmpeg program) and a JPEG decoder. Three references:
  decoded RGB   tgprep.video.decode's frames (libswscale): the old metric, and TG's exact difference "as now";
  planes        the decoder's own planes, stretched to full range without rounding: PSNR of Y, Cb and Cr;
  planes' RGB   RGB made from those planes as libjpeg-turbo's decoder makes it (its "fancy" triangle upsampling of
                chroma, JFIF's BT.601 matrix), unrounded: what a perfect JPEG of the planes would decode to.
A stored JPEG's own planes are read without upsampling: Y by simplejpeg (libjpeg-turbo) as grey, Cb and Cr by
FFmpeg's JPEG decoder, whose inverse DCT differs from libjpeg-turbo's by 1 in about 3 % of the pixels.
"""

import tarfile
from pathlib import Path

import av
import numpy as np
import simplejpeg

from tgprep import planes, synth
from tgprep.sample import read_meta, tg_from_stored
from tgprep.video import TAG_DECODING, decode

JFIF = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def source_planes(path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every frame's planes at native size as float64 full range: the decoder's yuv420p, stretched unrounded
    where it is limited range (every video of the prep corpus is limited-range yuv420p)."""
    out = []
    with av.open(str(path), **TAG_DECODING) as container:
        for frame in container.decode(video=0):
            y, cb, cr = (p.astype(np.float64) for p in planes.plane_views(frame))
            if planes.describe(frame)["range"] == "limited":
                y, cb, cr = (y - 16) * 255 / 219, (cb - 128) * 255 / 224 + 128, (cr - 128) * 255 / 224 + 128
            out.append((y, cb, cr))
    return out


def _triangle(plane: np.ndarray, axis: int, size: int) -> np.ndarray:
    """libjpeg's fancy upsampling along one axis: each sample gives two, 3/4 of itself and 1/4 of its neighbour on
    that side (the edges repeat), cropped to `size`."""
    c = np.moveaxis(plane, axis, 0)
    before, after = np.concatenate([c[:1], c[:-1]]), np.concatenate([c[1:], c[-1:]])
    out = np.empty((2 * len(c), *c.shape[1:]))
    out[0::2], out[1::2] = 0.75 * c + 0.25 * before, 0.75 * c + 0.25 * after
    return np.moveaxis(out[:size], 0, axis)


def planes_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB of full-range planes as a JPEG decoder makes it, clipped to 0..255, not rounded."""
    h, w = y.shape
    chroma = [_triangle(_triangle(c - 128, 0, h), 1, w) for c in (cb, cr)]
    return np.clip(np.stack([y, *chroma], -1) @ JFIF.T, 0, 255)


def jpeg_planes(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A JPEG's own Y, Cb and Cr planes, before any upsampling."""
    decoder = av.CodecContext.create("mjpeg", "r")
    frame = decoder.decode(av.Packet(data))[0]
    _, cb, cr = planes.plane_views(frame)
    return simplejpeg.decode_jpeg(data, "GRAY")[..., 0], cb, cr


def squared_errors(stored: tuple, reference: tuple) -> np.ndarray:
    """Sums of squared differences of Y, Cb and Cr planes."""
    return np.array([((s.astype(np.float64) - r) ** 2).sum() for s, r in zip(stored, reference)])


def psnr(squared: float, count: int) -> float:
    return float(10 * np.log10(255**2 * count / squared)) if squared else float("inf")


def jpeg_bytes_444(frames: np.ndarray, quality: int) -> tuple[list[bytes], list[bytes]]:
    """The frames and their TG as the build stored them before it took the planes: RGB 4:4:4 JPEGs of the RGB
    frames, TG clip(d, -128, 127) + 128 of their RGB difference at 4:2:0."""
    rgb = [simplejpeg.encode_jpeg(np.ascontiguousarray(x), quality, "rgb", "444") for x in frames]
    tg = []
    for a, b in zip(frames[:-1], frames[1:]):
        stored = (np.clip(np.subtract(b, a, dtype=np.int16), -128, 127) + 128).astype(np.uint8)
        tg.append(simplejpeg.encode_jpeg(stored, quality, "rgb", "420"))
    return rgb, tg


def decode_all(jpegs: list[bytes]) -> np.ndarray:
    return np.stack([simplejpeg.decode_jpeg(j) for j in jpegs])


def read_payload(sample: dict, modality: str, meta: dict) -> list[bytes]:
    """A sample's stored JPEGs of one modality, as bytes."""
    offsets = meta[f"{modality}_offsets"]
    return [bytes(sample[modality][a:b]) for a, b in zip(offsets, offsets[1:])]


def read_shards(shards: Path, wanted: set[str]) -> tuple[dict[str, tuple[int, int]], dict[str, dict]]:
    """Per video path: (.rgb bytes, .tg bytes); and the whole samples of the wanted paths. Nothing is unpickled."""
    sizes, samples = {}, {}
    for tar in sorted(shards.glob("*.tar")):
        members: dict[str, dict] = {}
        with tarfile.open(tar) as archive:
            for member in archive:
                key, ext = member.name.split(".", 1)  # keys hold no dots
                members.setdefault(key, {"__key__": key})[ext] = archive.extractfile(member).read()
        for sample in members.values():
            path = read_meta(sample)["path"]
            sizes[path] = (len(sample["rgb"]), len(sample["tg"]))
            if path in wanted:
                samples[path] = sample
    return sizes, samples


def folder_jpegs(folder: Path, prefix: str) -> list[bytes]:
    return [f.read_bytes() for f in sorted(folder.glob(f"{prefix}_*.jpg"))]


WAYS = ("paper", "4:4:4", "ours")
# per way: squared errors of RGB against the decoded RGB and the planes' RGB, of Y, Cb, Cr against the planes;
# TG absolute errors against the two exact differences
SUMS = ("rgb_sq", "rgb_sq_planes", "y_sq", "cb_sq", "cr_sq", "tg_abs", "tg_abs_planes")


def errors(corpus: Path, folders: Path, samples: dict[str, dict], names: list[str], quality: int) -> dict:
    """{"sums": {way: SUMS over `names`}, "counts": RGB, TG and Y values}, a frame at a time. The paper's TG has the
    opposite sign, x_t - x_{t+1}; every JPEG is decoded by simplejpeg, in RGB order. 4:4:4 frames have no 4:2:0
    planes to compare: their plane columns stay empty."""
    sums = {way: dict.fromkeys(SUMS, 0.0) for way in WAYS}
    counts = dict.fromkeys(("rgb", "tg", "y"), 0)
    for name in names:
        frames = decode(corpus / name, short_side=0).frames
        source = source_planes(corpus / name)
        meta, folder = read_meta(samples[name]), folders / Path(name).with_suffix("")
        stored = {"paper": (folder_jpegs(folder, "img"), folder_jpegs(folder, "tempgrad")),
                  "4:4:4": jpeg_bytes_444(frames, quality),
                  "ours": (read_payload(samples[name], "rgb", meta),
                           read_payload(samples[name], "tg", meta))}
        source_rgb = [planes_rgb(*p) for p in source[:1]]
        for k in range(len(frames)):
            x = frames[k].astype(np.float64)
            if k + 1 < len(frames):
                source_rgb.append(planes_rgb(*source[k + 1]))
                exact = np.subtract(frames[k + 1], frames[k], dtype=np.int16)
            for way, (rgb_jpegs, tg_jpegs) in stored.items():
                add_frame(sums[way], rgb_jpegs[k], x, source[k], source_rgb[0])
                if k + 1 < len(frames):
                    tg = simplejpeg.decode_jpeg(tg_jpegs[k]).astype(np.float64)
                    tg = 255 - 2 * tg if way == "paper" else tg_from_stored(tg)  # (d + 255) / 2 of the other sign
                    sums[way]["tg_abs"] += np.abs(tg - exact).sum()
                    sums[way]["tg_abs_planes"] += np.abs(tg - (source_rgb[1] - source_rgb[0])).sum()
            source_rgb.pop(0)
            counts["rgb"] += x.size
            counts["tg"] += x.size * (k + 1 < len(frames))
            counts["y"] += source[k][0].size
    return {"sums": sums, "counts": counts}


def add_frame(sums: dict, jpeg: bytes, x: np.ndarray, source: tuple, source_rgb: np.ndarray) -> None:
    """One stored RGB frame's squared errors against the three references."""
    rgb = simplejpeg.decode_jpeg(jpeg).astype(np.float64)
    sums["rgb_sq"] += ((rgb - x) ** 2).sum()
    sums["rgb_sq_planes"] += ((rgb - source_rgb) ** 2).sum()
    if simplejpeg.decode_jpeg_header(jpeg)[3] == "420":
        for name, sq in zip(("y_sq", "cb_sq", "cr_sq"), squared_errors(jpeg_planes(jpeg), source)):
            sums[name] += sq
    else:
        sums["y_sq"] = sums["cb_sq"] = sums["cr_sq"] = float("nan")


def disk_bytes(folder: Path) -> int:
    """What the files under folder take on disk: whole file-system blocks, as many small files pay for."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def stored_bytes(work: Path, shards: Path, names: list[str], quality: int) -> dict[str, dict[str, tuple[int, int]]]:
    """{way: {video: (RGB bytes, TG bytes)}} of every video: the shards' members, the folders' files, and the 4:4:4
    JPEGs of the decoded frames made here."""
    sizes, _ = read_shards(shards, set())
    out = {"ours": sizes, "paper": {}, "4:4:4": {}}
    for name in names:
        folder = work / "folders" / Path(name).with_suffix("")
        out["paper"][name] = tuple(sum(f.stat().st_size for f in folder.glob(f"{prefix}_*.jpg"))
                                   for prefix in ("img", "tempgrad"))
        rgb, tg = jpeg_bytes_444(decode(work / "corpus" / name, short_side=0).frames, quality)
        out["4:4:4"][name] = (sum(map(len, rgb)), sum(map(len, tg)))
    return out


def storage(work: Path, shards: Path, counts: dict[str, int], sample: int, quality: int) -> dict:
    """Per material (real pieces, synthetic, all) and way: KB per stored frame over every video, and the fidelity
    columns over an evenly spread sample of `sample` videos per material."""
    groups = {"real": sorted(n for n in counts if n.split("/")[0] not in synth.MOTIONS),
              "synthetic": sorted(n for n in counts if n.split("/")[0] in synth.MOTIONS)}
    picked = {g: names[:: max(1, -(-len(names) // sample))] for g, names in groups.items()}
    _, samples = read_shards(shards, {n for names in picked.values() for n in names})
    sizes = stored_bytes(work, shards, sorted(counts), quality)
    measured = {g: errors(work / "corpus", work / "folders", samples, names, quality) for g, names in picked.items()}
    measured["all"] = {"sums": {w: {k: sum(measured[g]["sums"][w][k] for g in groups) for k in SUMS} for w in WAYS},
                       "counts": {k: sum(measured[g]["counts"][k] for g in groups) for k in ("rgb", "tg", "y")}}
    groups["all"], picked["all"] = sorted(counts), picked["real"] + picked["synthetic"]
    table = {}
    for group, m in measured.items():
        if not groups[group]:
            continue
        frames, n = sum(counts[v] for v in groups[group]), m["counts"]
        table[group] = {"videos": len(groups[group]), "sampled_videos": len(picked[group]), "frames": frames}
        for way, s in m["sums"].items():
            table[group][way] = {
                "rgb_kb": sum(sizes[way][v][0] for v in groups[group]) / frames / 1e3,
                "tg_kb": sum(sizes[way][v][1] for v in groups[group]) / (frames - len(groups[group])) / 1e3,
                "rgb_psnr": psnr(s["rgb_sq"], n["rgb"]),
                "rgb_psnr_planes": psnr(s["rgb_sq_planes"], n["rgb"]),
                # a chroma plane holds a quarter of Y's values (the corpus's sides are even)
                **{f"{c}_psnr": psnr(s[f"{c}_sq"], n["y"] // (1 if c == "y" else 4)) for c in ("y", "cb", "cr")},
                "tg_mae": s["tg_abs"] / n["tg"], "tg_mae_planes": s["tg_abs_planes"] / n["tg"]}
            table[group][way]["total_kb"] = table[group][way]["rgb_kb"] + table[group][way]["tg_kb"]
    frames = sum(counts.values())
    table["disk_kb_per_frame"] = {"ours": disk_bytes(shards) / frames / 1e3,  # tars, sidecars, manifests
                                  "paper": disk_bytes(work / "folders") / frames / 1e3}
    return table
