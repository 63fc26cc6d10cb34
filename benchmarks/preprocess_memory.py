"""Wall time and peak memory of preprocessing a large animelist.csv, at 10M and 20M rows.

Generates animelist-layout ratings files (user_id, anime_id, rating, watching_status,
watched_episodes) over the real 2020 catalogue, runs the preprocessing in a fresh process for
each (so peak RSS is that run's own), and prints the figures and their 20M/10M ratios.

    python benchmarks/preprocess_memory.py [--rows 10000000 20000000] [--workdir /tmp/animerec-bench]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np


def generate(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from animerec.data import demo
    from animerec.data.layouts import load_anime

    ids = load_anime(demo.catalogue_path())["anime_id"].to_numpy()
    rng = np.random.default_rng(seed)
    chunk = 2_000_000
    with pcsv.CSVWriter(str(path), pa.schema([(c, pa.int32()) for c in
                        ("user_id", "anime_id", "rating", "watching_status", "watched_episodes")])) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            users = (np.arange(start, start + n) // 180).astype(np.int32)  # ~180 rows per user, like animelist
            writer.write_table(pa.table({
                "user_id": users,
                "anime_id": rng.choice(ids, n).astype(np.int32),
                "rating": rng.integers(0, 11, n, dtype=np.int32),
                "watching_status": rng.choice(np.array([1, 2, 3, 4, 6], np.int32), n, p=[.1, .6, .1, .1, .1]),
                "watched_episodes": rng.integers(0, 26, n, dtype=np.int32),
            }))


CHILD = """
import sys, time, resource, tempfile
from animerec.data import demo
from animerec.data.preprocess import preprocess
from animerec.config import DataConfig
data = DataConfig.model_validate_json(sys.argv[2])  # composed by the parent: only preprocess's memory counts here
start = time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    stats = preprocess(demo.catalogue_path(), sys.argv[1], data, out)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, stats["num_ratings"])
"""


def measure(path: Path) -> tuple[float, float, int]:
    from animerec.pipeline import compose_config

    data = compose_config(["data.min_user_ratings=20"], Path(__file__).resolve().parents[1]).data.model_dump_json()
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), data], capture_output=True, text=True, check=True)
    seconds, peak_mib, kept = result.stdout.split()[-3:]
    return float(seconds), float(peak_mib), int(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[10_000_000, 20_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/animerec-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    figures = []
    for rows in args.rows:
        path = args.workdir / f"animelist_{rows}.csv"
        if not path.exists():
            generate(path, rows)
        seconds, peak, kept = measure(path)
        figures.append((seconds, peak))
        print(f"rows={rows} file_mib={path.stat().st_size / 2**20:.0f} wall_s={seconds:.1f} peak_rss_mib={peak:.0f} "
              f"ratings_kept={kept}", flush=True)
    (s1, m1), (s2, m2) = figures
    print(f"time_ratio_{args.rows[1] // 10**6}M_vs_{args.rows[0] // 10**6}M: {s2 / s1:.2f}")
    print(f"memory_ratio_{args.rows[1] // 10**6}M_vs_{args.rows[0] // 10**6}M: {m2 / m1:.2f}")


if __name__ == "__main__":
    main()
