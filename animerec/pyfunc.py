"""MLflow pyfunc wrapper of a model artifact, for ``mlflow models serve``.

A request is a table (``dataframe_records`` / ``dataframe_split`` / ``inputs``); each row is
either a recommendation query or a rating pair:

- ``{"kind": "similar_anime", "query": "Cowboy Bebop", "n": 5, "types": ["TV"]}``
- ``{"kind": "similar_users", "query": 1234, "n": 10, "genres": ["Action"]}``
- ``{"kind": "rating_recs", "query": 1234, "n": 10, "min_rating": 7}``
- ``{"user_id": 1234, "anime_id": 1}``: the predicted rating on the 1-10 scale.

Queries answer with one JSON object per row, the same rows the pipeline steps produce (see
:meth:`animerec.service.RecommendationService.answer`); a table of rating pairs only answers as a
table with ``predicted_rating``. A bad request gets HTTP 400 with a message saying which row and
field is at fault, not a stack trace.

The logged model is self-contained: it carries this package as code (``code_paths``) and pins the
packages serving imports (:data:`SERVING_PACKAGES`, none of them TensorFlow) at the versions in use,
so ``mlflow models serve`` builds its environment anywhere. Its signature names every field of a
query and of a rating pair (all optional, any type: the query checks types itself and names the
field at fault); MLflow drops columns a signature does not name, so a misspelled field is ignored
with a warning in the server's log rather than refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from mlflow.types.schema import AnyType, ColSpec, Schema

from animerec.artifacts import MANIFEST, ArtifactError, ArtifactStore, read_arrays, sha256_file
from animerec.errors import UserError
from animerec.profiles import MAX_ENTRIES
from animerec.service import KINDS, QUERY_FIELDS, RecommendationService, is_missing

logger = logging.getLogger(__name__)

# What serving imports (checked by a test), pinned at the installed versions when a model is logged.
SERVING_PACKAGES = ("mlflow", "numpy", "pandas", "scipy", "pyarrow", "pydantic", "rapidfuzz", "filelock",
                    "defusedxml", "tqdm", "requests", "urllib3", "pyyaml", "numba", "llvmlite")
PAIR_FIELDS = ("user_id", "anime_id")
MAX_QUERY_ROWS = 100  # recommendation queries in one request (rows in all: up to MAX_ENTRIES)


def bad_request(message: str):
    return MlflowException(message, error_code=BAD_REQUEST)


class AnimeRecPyfunc(mlflow.pyfunc.PythonModel):
    """The service behind ``mlflow models serve``: rows with ``kind`` are queries, rows without are rating pairs."""

    def load_context(self, context) -> None:
        self.service = RecommendationService.from_path(bundle_folder(Path(context.artifacts["bundle"])))
        self.service.warm()  # the tables and compiled loops now: a server's first requests are as fast as the rest

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        if len(frame) > MAX_ENTRIES:
            raise bad_request(f"A request takes at most {MAX_ENTRIES:,} rows; this one has {len(frame):,}.")
        asks = frame["kind"].map(lambda v: not is_missing(v)) if "kind" in frame.columns else pd.Series(False)
        if not asks.any():
            return self._ratings(frame)
        if asks.sum() > MAX_QUERY_ROWS:
            raise bad_request(f"A request takes at most {MAX_QUERY_ROWS} queries (rows with 'kind'); this one has "
                              f"{int(asks.sum()):,}. Send them in several requests.")
        answers = []
        for position, row in enumerate(frame.to_dict(orient="records")):
            request = {k: v for k, v in row.items() if not is_missing(v)}
            try:
                answers.append(self.service.answer(request) if "kind" in request else self._pair(request))
            except UserError as err:
                raise bad_request(f"Request row {position}: {err}") from None
        return answers

    def _ratings(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in PAIR_FIELDS if c not in frame.columns]
        if missing:
            raise bad_request(
                f"Request lacks column(s) {', '.join(missing)}: send kind ({', '.join(KINDS)}) "
                f"with query and n, or user_id and anime_id (MAL IDs) for a predicted rating.")
        try:
            users, anime = (_ids(frame[c], c) for c in PAIR_FIELDS)
            ratings = self.service.bundle.predict(users, anime)
        except (UserError, ValueError, TypeError) as err:
            raise bad_request(str(err)) from None
        return pd.DataFrame({"user_id": users, "anime_id": anime, "predicted_rating": ratings})

    def _pair(self, request: dict) -> dict:
        """One rating pair in a table of queries: ``{"user_id", "anime_id", "predicted_rating"}``."""
        if set(request) != set(PAIR_FIELDS):
            raise UserError(f"A row without 'kind' is a rating pair of user_id and anime_id only, not "
                            f"{', '.join(sorted(request))}.")
        answer = self._ratings(pd.DataFrame([request])).iloc[0]
        return {"user_id": int(answer["user_id"]), "anime_id": int(answer["anime_id"]),
                "predicted_rating": float(answer["predicted_rating"])}


def _ids(column: pd.Series, name: str) -> np.ndarray:
    """Whole-number IDs (a JSON client may send 5.0); a UserError naming the column otherwise."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(float)
    if np.isnan(values).any() or (values != np.round(values)).any():
        bad = column[np.isnan(values) | (values != np.round(values))].iloc[0]
        raise UserError(f"{name} must be a MAL ID (a whole number), got {bad!r}.")
    return values.astype(np.int64)


def signature_and_example(folder: Path) -> tuple[ModelSignature, pd.DataFrame]:
    """Every field of a query and of a rating pair, optional and of any type; an example row of each shape,
    read from the model artifact's encoders and catalogue (not the whole model: it may be gigabytes)."""
    columns = [ColSpec(AnyType(), name, required=False) for name in (*QUERY_FIELDS, *PAIR_FIELDS)]
    encoders = read_arrays(Path(folder) / "encoders.npz")
    user, anime = int(encoders["user_ids"][0]), int(encoders["anime_ids"][0])
    names = pd.read_parquet(Path(folder) / "anime.parquet", columns=["anime_id", "name"])
    title = names.loc[names["anime_id"] == anime, "name"]
    example = pd.DataFrame([
        {"kind": "similar_anime", "query": str(title.iloc[0]) if len(title) else anime, "n": 5, "genres": ["Action"]},
        {"user_id": user, "anime_id": anime},
    ])
    return ModelSignature(inputs=Schema(columns)), example


def pinned_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


REFERENCE_FILE = "bundle_reference.json"


def log_pyfunc(bundle_dir: Path, name: str = "recommender", *, copy_max_mb: float | None = None) -> str:
    """Log the artifact folder as an MLflow pyfunc model in the active run; returns its model URI.

    The pyfunc holds a copy of the folder, unless it is over ``copy_max_mb`` (None: no limit):
    then it holds only a reference (the folder's path and its manifest's sha256), checked when
    the model is loaded, so a multi-GB full-scale model is not stored twice. Such a model has its
    signature but no input example: MLflow checks an example by loading the model and answering it,
    which at full size would hold a second copy of the model (2.2 GB) in the train step's process.
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
        code = Path(tmp) / "animerec"
        shutil.copytree(Path(__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
        signature, example = signature_and_example(bundle_dir)
        if source != bundle_dir:  # MLflow checks an example by loading the model: gigabytes, in the train step
            example = None
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=AnimeRecPyfunc(),
            artifacts={"bundle": str(source)},
            code_paths=[str(code)],
            pip_requirements=pinned_requirements(),
            signature=signature,
            input_example=example,
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
