"""Log a clicktune model to MLflow in a portable form, and get it back in another process.

Format (decided once, here): an MLflow *pyfunc* model whose

- artifact ``model_dir`` is exactly what ``model.save(dir)`` wrote (``clicktune_model.json`` plus
  a sentence-transformers directory or a ``state_dict``), loadable with
  :func:`finetuning.models.registry.load_model` by anyone, with or without MLflow;
- python model is *code*, not a pickle (:mod:`finetuning.experiments.pyfunc_code`), so renaming
  or changing our training classes never breaks an old model;
- ``pip_requirements`` are given explicitly (pinned to what is installed) so MLflow does not
  spend ~20 s inferring them;
- signature takes a ``text`` column and a ``tower`` param (``query``/``items``).

In MLflow 3 a logged model is a *LoggedModel* (``models:/<model_id>``) linked to its source run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
import numpy as np

from finetuning.experiments.naming import TAG_MODEL_ID
from finetuning.experiments.records import NoModelLogged, filter_literal
from finetuning.experiments.pyfunc_model import MODEL_DIR_ARTIFACT
from finetuning.models.base import EmbeddingsModelInterface

_REQUIRED_DISTRIBUTIONS = ("mlflow", "torch", "sentence-transformers", "transformers", "numpy", "pandas", "clicktune")


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model: the installed versions of what loading needs."""
    requirements = []
    for name in _REQUIRED_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        requirements.append(f"{name}=={version.split('+')[0]}")
    return requirements


PYFUNC_CODE_FILE = Path(__file__).with_name("pyfunc_code.py")

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "text")]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
    params=ParamSchema([ParamSpec("tower", "string", "query")]),
)


@dataclass(frozen=True)
class LoggedModelRef:
    """A model logged for a run: ``model_uri`` is ``models:/<model_id>``."""

    model_id: str
    model_uri: str
    run_id: str


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block (``models:/`` URIs resolve through it)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_embeddings_model(
    model: EmbeddingsModelInterface,
    client: MlflowClient | None = None,
    *,
    run_id: str,
    tracking_uri: str | None = None,
    name: str = "model",
    tags: dict[str, str] | None = None,
    step: int = 0,
) -> LoggedModelRef:
    """Log ``model`` as a pyfunc LoggedModel of ``run_id`` (in the run's experiment).

    Give an ``MlflowClient`` or a ``tracking_uri``. Only public client calls, no fluent global
    state: create the LoggedModel, build the MLflow model directory locally
    (``pyfunc.save_model``), upload it, mark it READY, link it to the run.
    """
    if client is None:
        if tracking_uri is None:
            raise ValueError("give an MlflowClient or a tracking_uri")
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=run_id, tags=tags, model_type="clicktune-embeddings"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="clicktune-log-") as tmp:
            model_dir = Path(tmp) / MODEL_DIR_ARTIFACT
            model.save(model_dir)
            mlflow_dir = Path(tmp) / "mlflow_model"
            with warnings.catch_warnings():
                # the explicit signature replaces type hints and an input example (which would
                # make MLflow load and run the model once more while logging)
                warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
                _save_pyfunc(mlflow_dir, model_dir, logged, run_id)
            client.log_model_artifacts(logged.model_id, str(mlflow_dir))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        _try(lambda: client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED))
        raise
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    return LoggedModelRef(model_id=logged.model_id, model_uri=f"models:/{logged.model_id}", run_id=run_id)


def _save_pyfunc(mlflow_dir: Path, model_dir: Path, logged, run_id: str) -> None:
    mlflow.pyfunc.save_model(
        path=str(mlflow_dir),
        python_model=str(PYFUNC_CODE_FILE),
        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
        pip_requirements=pip_requirements(),
        signature=SIGNATURE,
        mlflow_model=Model(
            artifact_path=logged.artifact_location, run_id=run_id, model_uuid=logged.model_id, model_id=logged.model_id
        ),
    )


def _try(fn) -> None:
    try:
        fn()
    except Exception:  # best effort while another error propagates
        pass


def download_model_dir(model_uri: str, *, tracking_uri: str, dst: str | Path) -> Path:
    """Download a logged/registered model and return the path of its clicktune model directory."""
    with use_tracking_uri(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst), tracking_uri=tracking_uri))
    mlmodel = Model.load(str(local / "MLmodel"))
    artifacts = mlmodel.flavors.get("python_function", {}).get("artifacts", {})
    if MODEL_DIR_ARTIFACT not in artifacts:
        raise ValueError(f"{model_uri} is not a clicktune model (no {MODEL_DIR_ARTIFACT!r} artifact)")
    return local / artifacts[MODEL_DIR_ARTIFACT]["path"]


def load_logged_model(
    model_uri: str, *, tracking_uri: str, device: str | None = None, dst: str | Path | None = None
) -> EmbeddingsModelInterface:
    """Download ``model_uri`` and load it with ``finetuning.models.registry.load_model``.

    With ``dst=None`` the download goes to a temporary directory removed after loading.
    """
    from finetuning.models.registry import load_model

    if dst is not None:
        return load_model(download_model_dir(model_uri, tracking_uri=tracking_uri, dst=dst), device=device)
    with tempfile.TemporaryDirectory(prefix="clicktune-dl-") as tmp:
        return load_model(download_model_dir(model_uri, tracking_uri=tracking_uri, dst=tmp), device=device)


def logged_model_uri(client, run_id: str) -> str:
    """``models:/<model_id>`` of the model ``run_id`` logged (its ``clicktune.model_id`` tag, else the
    newest LoggedModel whose source is the run); ``NoModelLogged`` when there is none."""
    run = client.get_run(run_id)
    model_id = run.data.tags.get(TAG_MODEL_ID)
    if not model_id:
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = {filter_literal(run_id)}",
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
            max_results=1,
        )
        if not models:
            raise NoModelLogged(f"run {run_id} has no logged model")
        model_id = models[0].model_id
    return f"models:/{model_id}"
