"""Ratings/s of the lazy trainer vs plain `model.fit` with Keras Adam, measured in one run.

Synthetic data: 300k users x 17.5k anime, 128-wide embeddings, batch 10,000, 2M ratings; then
the lazy trainer again with 600k users. Each figure is the throughput of one timed epoch after a
few warm-up batches (plain fit is timed on fewer batches: it is slow). Both read the same
``make_dataset`` pipeline.

    python benchmarks/train_throughput.py [--ratings 2000000] [--fit-batches 40]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def synthetic(num_users: int, num_anime: int, n: int, seed: int = 0):
    from animerec.training.sampling import TrainData

    rng = np.random.default_rng(seed)
    return TrainData(rng.integers(0, num_users, n), rng.integers(0, num_anime, n), rng.random(n, dtype=np.float32))


def model_cfg(batch: int, epochs: int):
    """The seed network (128-d, he_normal, L2 1e-6, sigmoid, binary cross-entropy) at a constant 1e-3."""
    from animerec.pipeline import compose_config

    return compose_config([f"model.batch_size={batch}", f"model.epochs={epochs}", "model.patience=99",
                           "model.lr.schedule=constant", "model.lr.min_lr=1e-3", "model.lr.max_lr=1e-3"], ROOT).model


def lazy_rate(num_users, num_anime, n, batch) -> float:
    from animerec.model import build_model
    from animerec.training.input_pipeline import make_dataset
    from animerec.training.loops import LazyTrainer

    data = synthetic(num_users, num_anime, n)
    cfg = model_cfg(batch, 1)
    model = build_model(cfg, num_users, num_anime)
    trainer = LazyTrainer(model, cfg.loss)
    dataset = make_dataset(data, batch, shuffle=True, seed=0)
    trainer.train_epoch(dataset.take(5), lambda *_: None)  # warm-up: tracing
    started = time.perf_counter()
    trainer.train_epoch(dataset, lambda *_: None)
    return n / (time.perf_counter() - started)


def fit_rate(num_users, num_anime, n_batches, batch) -> float:
    import keras

    from animerec.model import build_model
    from animerec.training.input_pipeline import make_dataset

    data = synthetic(num_users, num_anime, n_batches * batch)
    cfg = model_cfg(batch, 2)
    model = build_model(cfg, num_users, num_anime)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=cfg.loss)
    dataset = make_dataset(data, batch, shuffle=True, seed=0)
    model.fit(dataset.take(3), epochs=1, verbose=0)  # warm-up: tracing
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return n_batches * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--anime", type=int, default=17_500)
    parser.add_argument("--fit-batches", type=int, default=30)
    args = parser.parse_args()
    fit_300 = fit_rate(300_000, args.anime, args.fit_batches, args.batch)
    print(f"keras_fit_300k_users: {fit_300:,.0f} ratings/s", flush=True)
    lazy_300 = lazy_rate(300_000, args.anime, args.ratings, args.batch)
    print(f"lazy_300k_users: {lazy_300:,.0f} ratings/s", flush=True)
    lazy_600 = lazy_rate(600_000, args.anime, args.ratings, args.batch)
    print(f"lazy_600k_users: {lazy_600:,.0f} ratings/s", flush=True)
    print(f"speedup_vs_fit_300k: {lazy_300 / fit_300:.2f}")
    print(f"scaling_600k_vs_300k: {lazy_600 / lazy_300:.2f}")


if __name__ == "__main__":
    main()
