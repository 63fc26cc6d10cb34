"""MLflow pyfunc wrapper of a model artifact, for ``mlflow models serve``.

A request is a table (``dataframe_records`` / ``dataframe_split`` / ``inputs``); each row is
either a recommendation query or a rating pair:

- ``{"kind": "similar_anime", "query": "Cowboy Bebop", "n": 5, "types": ["TV"]}``
- ``{"kind": "similar_users", "query": 1234, "n": 10, "genres": ["Action"]}``
- ``{"kind": "rating_recs", "query": 1234, "n": 10, "min_rating": 7}``
- ``{"user_id": 1234, "anime_id": 1}``: the predicted rating on the 1-10 scale.

Queries answer with one JSON object per row, the same rows the pipeline steps produce (see
:meth:`animerec.service.RecommendationService.answer`). A bad request gets HTTP 400 with a
message saying which row and field is at fault, not a stack trace.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST

from animerec.artifacts import MANIFEST, ArtifactError, ArtifactStore, sha256_file
from animerec.errors import UserError
from animerec.service import RecommendationService, is_missing

logger = logging.getLogger(__name__)


def bad_request(message: str):
    return MlflowException(message, error_code=BAD_REQUEST)


class AnimeRecPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.service = RecommendationService.from_path(bundle_folder(Path(context.artifacts["bundle"])))

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        if "kind" not in frame.columns:
            return self._ratings(frame)
        answers = []
        for position, row in enumerate(frame.to_dict(orient="records")):
            request = {k: v for k, v in row.items() if not is_missing(v)}
            try:
                answers.append(self.service.answer(request))
            except UserError as err:
                raise bad_request(f"Request row {position}: {err}") from None
        return answers

    def _ratings(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("user_id", "anime_id") if c not in frame.columns]
        if missing:
            raise bad_request(
                f"Request lacks column(s) {', '.join(missing)}: send kind (similar_anime, similar_users, rating_recs) "
                f"with query and n, or user_id and anime_id (MAL IDs) for a predicted rating."
            )
        try:
            ratings = self.service.bundle.predict(frame["user_id"].to_numpy(np.int64), frame["anime_id"].to_numpy(np.int64))
        except (UserError, ValueError, TypeError) as err:
            raise bad_request(str(err)) from None
        return pd.DataFrame({"user_id": frame["user_id"], "anime_id": frame["anime_id"], "predicted_rating": ratings})


REFERENCE_FILE = "bundle_reference.json"


def log_pyfunc(bundle_dir: Path, name: str = "recommender", *, copy_max_mb: float | None = None) -> str:
    """Log the artifact folder as an MLflow pyfunc model in the active run; returns its model URI.

    The pyfunc holds a copy of the folder, unless it is over ``copy_max_mb`` (None: no limit):
    then it holds only a reference (the folder's path and its manifest's sha256), checked when
    the model is loaded, so a multi-GB full-scale model is not stored twice.
    """

    bundle_dir = Path(bundle_dir).resolve()
    size = sum(f.stat().st_size for f in bundle_dir.rglob("*") if f.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        source = bundle_dir
        if copy_max_mb is not None and size > float(copy_max_mb) * 2**20:
            source = Path(tmp) / "bundle"
            source.mkdir()
            (source / REFERENCE_FILE).write_text(json.dumps({
                "path": str(bundle_dir), "manifest_sha256": sha256_file(bundle_dir / MANIFEST), "bytes": size}) + "\n")
            logger.info("The MLflow model refers to %s (%.0f MB, over main.mlflow_copy_max_mb=%g) instead of copying "
                        "it; serve it on this machine, or set main.mlflow_copy_max_mb=null for a self-contained copy.",
                        bundle_dir, size / 2**20, copy_max_mb)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=AnimeRecPyfunc(),
            artifacts={"bundle": str(source)},
            pip_requirements=["animerec"],
        )
    return info.model_uri


def bundle_folder(folder: Path) -> Path:
    """The model artifact folder of a logged pyfunc: its copy, or the folder its reference names, checked."""
    reference = Path(folder) / REFERENCE_FILE
    if not reference.is_file():
        return Path(folder)

    recorded = json.loads(reference.read_text())
    target = Path(recorded["path"])
    manifest = target / MANIFEST
    if not manifest.is_file() or sha256_file(manifest) != recorded["manifest_sha256"]:
        raise ArtifactError(
            f"This MLflow model refers to the model artifact at {target} (it was over main.mlflow_copy_max_mb, so it "
            f"was not copied), and that folder is {'gone' if not manifest.is_file() else 'a different model now'}. "
            f"Serve it where it was trained, or retrain with main.mlflow_copy_max_mb=null for a self-contained copy.")
    ArtifactStore.load_version(target).check_sizes()
    return target
