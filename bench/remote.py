"""Remote shards: training clips/s of a cold and a cached epoch from a web server on 127.0.0.1, beside local shards.

Run from the project root: python bench/remote.py [--frames 3000] [--workers 2] [--batch 8] [--work DIR] [--json PATH]
(the bench extra, pip install -e '.[bench]': it times with bench/loader.py's clips_per_second, whose module needs it)

The corpus is bench/corpus.py's, built into frame shards of --videos-per-shard videos by tgprep.build.build (4: a
cold epoch then fetches a shard every few batches). The same shards are
read three ways, through the same tgtrain.data.train_stream (8 RGB + 8 TG frames, 8 apart, weak view at --size),
each through a DataLoader with --workers workers:
  local:  the folder, memory-mapped;
  cold:   served by `python -m http.server` (a process of its own, so that its CPU is not counted) and read through
          an empty node cache: every shard drawn is fetched whole, checked, then read as a local one;
  cached: the same URL and the cache the cold epoch filled.
Loopback stands in for a fast link. Clips/s are medians over --repeats rounds, the ways taking turns, each timing
--batches batches after the workers have delivered their first (bench/loader.py's clips_per_second; for the cold
epoch the first shards' fetch is inside that first batch, every later fetch is timed). Clips per CPU second count the
workers' and this process's CPU. Bytes fetched and GETs per shard come from the server's log.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/'s scripts, imported as modules
import corpus  # noqa: E402
from loader import CLIP_LEN, INTERVAL  # noqa: E402
from measure import clips_per_second  # noqa: E402

from tgprep.build import build  # noqa: E402
from tgprep.config import BuildConfig  # noqa: E402
from tgprep.storage.index import Storage  # noqa: E402
from tgtrain.data import train_stream  # noqa: E402
from tgtrain.shards import Data  # noqa: E402

TARGET_CACHED, TARGET_COLD = 0.95, 0.8  # x the local loader's clips/s


def serve(folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`python -m http.server` over folder on 127.0.0.1, its request log in `log`; (the process, its URL)."""
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"], cwd=folder,
                              stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    port = re.search(r"port (\d+)", server.stdout.readline())[1]
    return server, f"http://127.0.0.1:{port}/"


def gets(log: Path) -> Counter:
    """GETs of each tar that the server answered with 200, from its log so far."""
    return Counter(m[1] for m in re.finditer(r'"GET /(\S+\.tar) HTTP/1\.[01]" 200', log.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="corpus size, as bench/loader.py's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24, help="batches timed per way and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--videos-per-shard", type=int, default=4)
    parser.add_argument("--work", type=Path, help="folder for the corpus and outputs, kept [default: temporary]")
    parser.add_argument("--json", type=Path, help="where to write the results [default: <work>.json, beside it]")
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-remote-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shards, log = work / "shards", work / "server.log"
    server = None
    try:
        corpus.make_corpus(work, args.frames)
        shutil.rmtree(shards, ignore_errors=True)
        build(BuildConfig(dataset="folder", root=str(work / "corpus"), out=str(shards), ratio=0.5, short_side=0,
                          videos_per_shard=args.videos_per_shard))
        server, url = serve(shards, log)
        total = args.batches + args.workers  # each worker's first batch is not timed

        def epoch(data: Data) -> tuple[float, float]:
            stream = train_stream(data.shards("labeled") + data.shards("unlabeled"), batch_size=args.batch,
                                  clip_len=CLIP_LEN, interval=INTERVAL, size=args.size, labeled=False,
                                  epoch_batches=total, seed=0)
            return clips_per_second(stream, args.workers, args.batches, args.batch)

        rates, fetched = {"local": [], "cold": [], "cached": []}, []
        for i in range(args.repeats):
            rates["local"].append(epoch(Data(shards)))
            cache = work / f"cache-{i}"
            remote = Data(url, Storage(cache=str(cache), cache_limit="100GB"))
            before = gets(log)
            rates["cold"].append(epoch(remote))
            cold = gets(log) - before
            rates["cached"].append(epoch(remote))
            both = gets(log) - before
            fetched.append({"cold_bytes": sum((shards / n).stat().st_size * k for n, k in cold.items()),
                            "cached_bytes": sum((shards / n).stat().st_size * k for n, k in (both - cold).items()),
                            "shards_drawn": len(both), "most_gets_of_a_shard": max(both.values(), default=0)})
            shutil.rmtree(cache)
            print(f"round {i + 1}: " + ", ".join(f"{w} {r[-1][0]:.1f}" for w, r in rates.items()), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if args.work is None:
            shutil.rmtree(work)
    report(rates, fetched, args)


def report(rates: dict, fetched: list[dict], args) -> None:
    table = {way: {"clips_s": median(r[0] for r in runs), "clips_per_cpu_s": median(r[1] for r in runs), "all": runs}
             for way, runs in rates.items()}
    local, local_cpu = table["local"]["clips_s"], table["local"]["clips_per_cpu_s"]
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in corpus.machine().items()))
    print(f"{args.workers} workers, batch {args.batch}, {args.batches} batches timed at {args.size}, medians of "
          f"{args.repeats} interleaved rounds; a web server on 127.0.0.1 (python -m http.server)")
    print("| epoch | clips/s | x local | clips per CPU s | x local per CPU s | MB fetched |")
    print("| --- | --- | --- | --- | --- | --- |")
    for way in ("local", "cold", "cached"):
        r, c = table[way]["clips_s"], table[way]["clips_per_cpu_s"]
        mb = "-" if way == "local" else f"{median(f[way + '_bytes'] for f in fetched) / 1e6:.1f}"
        print(f"| {way} | {r:.1f} | {r / local:.2f} | {c:.1f} | {c / local_cpu:.2f} | {mb} |")
    goals = [f"cached epoch >= {TARGET_CACHED}x local: {table['cached']['clips_s'] / local:.2f}x "
             f"({'met' if table['cached']['clips_s'] / local >= TARGET_CACHED else 'MISSED'})",
             f"cold epoch >= {TARGET_COLD}x local: {table['cold']['clips_s'] / local:.2f}x "
             f"({'met' if table['cold']['clips_s'] / local >= TARGET_COLD else 'MISSED'})",
             f"each shard fetched once per cache: at most {max(f['most_gets_of_a_shard'] for f in fetched)} GET of "
             f"a shard over a cold and a cached epoch ({'met' if all(f['most_gets_of_a_shard'] <= 1 for f in fetched) else 'MISSED'})"]
    print("\n" + "\n".join(goals))
    out = args.json or (args.work or Path(tempfile.gettempdir()) / "tgprep-bench-remote").with_suffix(".json")
    result = {"command": ["python", "bench/remote.py", *sys.argv[1:]], "machine": corpus.machine(),
              "settings": vars(args) | {"work": str(args.work), "json": str(args.json)}, "clips_s": table,
              "fetched": fetched, "targets": goals, "when": time.strftime("%Y-%m-%d")}
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
