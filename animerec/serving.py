"""MLflow pyfunc wrapper of a model artifact, for ``mlflow models serve``.

A request is a table with ``user_id`` and ``anime_id`` columns (original MAL IDs); the answer
is the predicted rating on the 1-10 scale for each row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


class AnimeRecPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from animerec.bundle import ModelBundle

        self.bundle = ModelBundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        missing = [c for c in ("user_id", "anime_id") if c not in frame.columns]
        if missing:
            raise ValueError(f"Request lacks column(s) {', '.join(missing)}; send user_id and anime_id (MAL IDs).")
        ratings = self.bundle.predict(frame["user_id"].to_numpy(np.int64), frame["anime_id"].to_numpy(np.int64))
        return pd.DataFrame({"user_id": frame["user_id"], "anime_id": frame["anime_id"], "predicted_rating": ratings})


def log_pyfunc(bundle_dir: Path, name: str = "recommender") -> str:
    """Log the artifact folder as an MLflow pyfunc model in the active run; returns its model URI."""
    example = None
    try:
        from animerec.bundle import ModelBundle

        bundle = ModelBundle.load(bundle_dir)
        example = pd.DataFrame({"user_id": bundle.user_ids[:2], "anime_id": bundle.anime_ids[:2]})
    except Exception as err:  # the example is a convenience only
        logger.debug("No input example: %s", err)
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=AnimeRecPyfunc(),
        artifacts={"bundle": str(bundle_dir)},
        input_example=example,
        pip_requirements=["animerec"],
    )
    return info.model_uri
