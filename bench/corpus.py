"""The benches' corpus, made once and kept, and the machine line that every bench report starts with.

The corpus: the real HMDB-51 / UCF-101 / Kinetics-400 clips of ../shared/realdata cut into 2-4 s pieces and
re-encoded at native size as HMDB is (MPEG-4 part 2 .avi, by the ffmpeg program through
tgprep.video.encode_video), then synthetic 320x240 videos (tgprep.synth) up to the frames asked, laid out as a
`folder` dataset (<root>/<class>/<video>).
"""

import json
import os
import platform
import shutil
from pathlib import Path

from tgprep import synth
from tgprep.video import decode, encode_video

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
SOURCES = sorted(p for d in ("hmdb51", "ucf101", "kinetics400") for p in (VIDEOS / d).rglob("*")
                 if p.suffix in (".avi", ".mp4"))
PIECE_SECONDS = (2.0, 3.0, 4.0)  # cycled; a rest under 2 s is dropped unless it is the whole clip
# 3 s at the paper's 240p, in the textured look (sensor noise, distractors, drawn colours) and not the demo's flat
# default: a flat cartoon flatters quality-95 4:2:0 JPEGs (55.7 dB) and resembles none of the datasets
SYNTH = dict(width=320, height=240, frames=75, fps=25.0, noise=4.0, distractors=2, plain=False, speed=1.0)


# -- the corpus ---------------------------------------------------------------------------------------------

def make_corpus(work: Path, frames: int) -> dict[str, int]:
    """{path relative to work/corpus: frame count}, made once per --frames and then reused."""
    record = work / "corpus.json"  # written last: a corpus with a record is complete
    if record.is_file() and json.loads(record.read_text())["frames_asked"] == frames:
        return json.loads(record.read_text())["counts"]
    record.unlink(missing_ok=True)
    shutil.rmtree(work / "corpus", ignore_errors=True)
    counts = cut_real(work / "corpus", budget=frames // 2)
    counts |= add_synthetic(work, budget=frames - sum(counts.values()))
    record.write_text(json.dumps({"frames_asked": frames, "counts": counts}, indent=1, sort_keys=True))
    return counts


def cut_real(corpus: Path, budget: int) -> dict[str, int]:
    """The real clips cut into 2-4 s pieces, until `budget` frames (all of them by default)."""
    counts, total = {}, 0
    for source in SOURCES:
        video = decode(source, short_side=0)
        start, piece = 0, 0
        while start < len(video.frames) and total < budget:
            if len(video.frames) - start < round(2 * video.fps) and start > 0:
                break
            frames = video.frames[start:start + round(PIECE_SECONDS[piece % len(PIECE_SECONDS)] * video.fps)]
            name = f"{source.parent.name}/{source.stem}_p{piece}.avi"
            (corpus / name).parent.mkdir(parents=True, exist_ok=True)
            encode_video(corpus / name, frames, video.fps)
            counts[name], total = len(frames), total + len(frames)
            start, piece = start + len(frames), piece + 1
    return counts


def add_synthetic(work: Path, budget: int) -> dict[str, int]:
    """Enough synthetic 240p videos for `budget` frames, hard-linked into the corpus as classes of their own."""
    videos = -(-budget // SYNTH["frames"])
    if videos <= 0:
        return {}
    classes = min(len(synth.MOTIONS), max(1, videos // 2))
    config = synth.SynthConfig(classes=classes, videos_per_class=-(-videos // classes), **SYNTH)
    shutil.rmtree(work / "synth", ignore_errors=True)
    synth.generate(work / "synth", config)
    counts = {}
    for path in sorted((work / "synth").glob("*/*.avi")):
        name = f"{path.parent.name}/{path.name}"
        (work / "corpus" / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, work / "corpus" / name)
        counts[name] = SYNTH["frames"]
    return counts


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "memory_gib": round(memory / 2**20, 1), "cpu": cpu,
            "python": platform.python_version()}
