"""One epoch of the Keras taste model (animerec/taste.py) on a preprocessed split, timed.

Reads the train and valid splits of a ``preprocessed`` artifact folder (e.g. the one
``benchmarks/full_scale.py`` leaves in /tmp/animerec-full-scale/artifacts/preprocessed/v1) and fits
the ``model=best`` preset's taste model for ``--epochs`` epochs. Prints ``taste_epoch_seconds`` per
epoch (training and the validation loss together, as the train step logs them), the users and
anime, and the peak RSS.

    python benchmarks/taste_speed.py /tmp/animerec-full-scale/artifacts/preprocessed/v1 --batch-size 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from animerec.pipeline import compose_config
    from animerec.taste import fit_taste_model, history_matrix

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preprocessed", type=Path, help="a preprocessed artifact folder (train/valid parquet files)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's model.taste.batch_size")
    args = parser.parse_args()
    cfg = compose_config(["model=best"], ROOT).model.taste
    cfg = dataclasses.replace(cfg, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size or cfg.batch_size)
    with np.load(args.preprocessed / "encoders.npz") as encoders:
        num_users, num_anime = len(encoders["user_ids"]), len(encoders["anime_ids"])
    columns = ["user_index", "anime_index"]
    train = pd.read_parquet(args.preprocessed / "train.parquet", columns=columns)
    valid = pd.read_parquet(args.preprocessed / "valid.parquet", columns=columns)
    x_train = history_matrix(train.user_index.to_numpy(), train.anime_index.to_numpy(), num_users, num_anime)
    x_valid = history_matrix(valid.user_index.to_numpy(), valid.anime_index.to_numpy(), num_users, num_anime)
    del train, valid
    print(f"users {num_users:,} anime {num_anime:,} train ratings {x_train.nnz:,} batch {cfg.batch_size}",
          flush=True)
    started = time.perf_counter()
    fitted = fit_taste_model(x_train, x_valid, cfg, verbose=0)
    for row in fitted.history:
        print(f"taste_epoch_seconds: {row['taste_seconds']:.1f} (epoch {row['epoch']}, loss {row['taste_loss']:.4f}, "
              f"val_loss {row['taste_val_loss']:.4f})")
    print(f"fit_seconds: {time.perf_counter() - started:.1f}")
    print(f"peak_rss_mb: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
