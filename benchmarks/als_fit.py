"""The peer users would pick: implicit's ALS (64 factors, 15 iterations) on a preprocessed split's ratings.

Reads ``train.parquet`` and ``valid.parquet`` of a preprocessed artifact folder (the ratings ``model=best``
trains on: its network on train with valid for early stopping, its ranking head and similar-anime index on
train + valid), builds the users x anime matrix (confidence = the 1-10 rating) and fits ALS on the CPU.
Prints ``als_load_seconds``, ``als_fit_seconds`` and ``als_seconds`` (both: the time to a model).
``benchmarks/full_scale.py`` runs it as its ``als`` stage.

    python benchmarks/als_fit.py /tmp/animerec-full-scale/artifacts/preprocessed/v1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a preprocessed artifact folder")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    columns = ["user_index", "anime_index", "rating"]
    ratings = pd.concat([pd.read_parquet(args.folder / f"{split}.parquet", columns=columns)
                         for split in ("train", "valid")], ignore_index=True)
    shape = (int(ratings["user_index"].max()) + 1, int(ratings["anime_index"].max()) + 1)
    matrix = sp.csr_matrix((ratings["rating"].to_numpy(np.float32),
                            (ratings["user_index"].to_numpy(), ratings["anime_index"].to_numpy())), shape=shape)
    loaded = time.perf_counter()
    with threadpool_limits(1, "blas"):  # as implicit asks: its own threads, not BLAS's, use the cores
        model = AlternatingLeastSquares(factors=args.factors, iterations=args.iterations, random_state=0)
        model.fit(matrix, show_progress=False)
    done = time.perf_counter()
    print(f"als_ratings {matrix.nnz} users {shape[0]} anime {shape[1]}")
    print(f"als_load_seconds {loaded - started:.1f}")
    print(f"als_fit_seconds {done - loaded:.1f}")
    print(f"als_seconds {done - started:.1f}", flush=True)


if __name__ == "__main__":
    main()
