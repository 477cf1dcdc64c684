"""Log a clicktune model to MLflow in a portable form, and get it back in another process.

Format (decided once, here), by what the model is:

- **one sentence-transformers tower** (a text model whose queries and items share the tower): the
  ``mlflow.sentence_transformers`` flavour. The model directory (artifact ``model.sentence_transformer``)
  is a plain sentence-transformers directory — anyone loads it with ``SentenceTransformer(dir)``
  or ``mlflow.sentence_transformers.load_model(uri)`` — plus ``clicktune_model.json`` (so
  :func:`finetuning.models.registry.load_model` loads it too) and a model card ``README.md``
  (:mod:`.model_card`). ``mlflow.pyfunc.load_model(uri).predict(["text"])`` embeds.
- **anything else** (separate query/items towers, CLIP): a *pyfunc* wrapper
  (:class:`~finetuning.experiments.pyfunc_model.EmbeddingsPyfunc`) whose artifact ``model_dir`` is
  what ``model.save(dir)`` wrote (plus the card). Its python model is *code*
  (:mod:`finetuning.experiments.pyfunc_code`), and the few modules it needs (``finetuning.models``
  and the wrapper) ship with the model (``code_paths``), so loading needs no clicktune install. The
  signature takes a ``text`` column and a ``tower`` param (``query``/``items``).

``pip_requirements`` are given explicitly — ranges around what is installed, of packages on PyPI
only — so MLflow does not spend ~20 s inferring them and anyone can install them.

In MLflow 3 a logged model is a *LoggedModel* (``models:/<model_id>``) linked to its source run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shutil
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
from finetuning.models.base import MODEL_CONFIG_FILE, EmbeddingsModelInterface

#: What loading a logged model needs (distribution names on PyPI); never our own package.
_SENTENCE_TRANSFORMERS_REQUIREMENTS = ("mlflow", "sentence-transformers", "transformers", "torch", "numpy")
_PYFUNC_REQUIREMENTS = (*_SENTENCE_TRANSFORMERS_REQUIREMENTS, "pandas")
#: Data directory of the sentence-transformers flavour; artifact of the pyfunc wrapper.
SENTENCE_TRANSFORMERS_DATA = "model.sentence_transformer"
FORMAT_SENTENCE_TRANSFORMERS = "sentence_transformers"
FORMAT_PYFUNC = "pyfunc"
TAG_MODEL_FORMAT = "clicktune.model_format"
CARD_FILE = "README.md"


def requirement_range(name: str) -> str | None:
    """``name>=<installed>,<<next major>`` (local version labels such as ``+cpu`` dropped); ``None``
    when it is not installed."""
    try:
        version = importlib.metadata.version(name).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None
    major = version.split(".")[0]
    return f"{name}>={version},<{int(major) + 1}" if major.isdigit() else f"{name}=={version}"


def pip_requirements(model_format: str = FORMAT_PYFUNC) -> list[str]:
    """The requirements of a logged model of ``model_format`` (installable from PyPI)."""
    names = _SENTENCE_TRANSFORMERS_REQUIREMENTS if model_format == FORMAT_SENTENCE_TRANSFORMERS else _PYFUNC_REQUIREMENTS
    return [r for r in map(requirement_range, names) if r]


def model_format(model: EmbeddingsModelInterface) -> str:
    """``sentence_transformers`` for one shared sentence-transformers tower, else ``pyfunc``."""
    from finetuning.models.text import TextEmbeddingsModel

    if isinstance(model, TextEmbeddingsModel) and model.same_query_and_items:
        return FORMAT_SENTENCE_TRANSFORMERS
    return FORMAT_PYFUNC


def card_directory(model_format: str) -> str:
    """Where the model card lives inside a logged model's artifacts (the model directory)."""
    return SENTENCE_TRANSFORMERS_DATA if model_format == FORMAT_SENTENCE_TRANSFORMERS else f"artifacts/{MODEL_DIR_ARTIFACT}"


PYFUNC_CODE_FILE = Path(__file__).with_name("pyfunc_code.py")

ST_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
)

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
    card: str | None = None,
) -> LoggedModelRef:
    """Log ``model`` as a LoggedModel of ``run_id`` (in the run's experiment), in the format of
    :func:`model_format`, with ``card`` (markdown) as the model directory's ``README.md``.

    Give an ``MlflowClient`` or a ``tracking_uri``. Only public client calls, no fluent global
    state: create the LoggedModel, build the MLflow model directory locally, upload it, mark it
    READY, link it to the run.
    """
    if client is None:
        if tracking_uri is None:
            raise ValueError("give an MlflowClient or a tracking_uri")
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    fmt = model_format(model)
    logged = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=run_id, tags={**(tags or {}), TAG_MODEL_FORMAT: fmt},
        model_type="clicktune-embeddings",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="clicktune-log-") as tmp:
            mlflow_dir = Path(tmp) / "mlflow_model"
            mlflow_model = Model(artifact_path=logged.artifact_location, run_id=run_id, model_uuid=logged.model_id,
                                 model_id=logged.model_id)
            with warnings.catch_warnings():
                # the explicit signature replaces type hints and an input example (which would
                # make MLflow load and run the model once more while logging)
                warnings.filterwarnings("ignore", message=".*(type hints|input example).*", category=UserWarning)
                if fmt == FORMAT_SENTENCE_TRANSFORMERS:
                    _save_sentence_transformers(mlflow_dir, model, mlflow_model)
                else:
                    _save_pyfunc(mlflow_dir, model, Path(tmp), mlflow_model)
            if card is not None:
                (mlflow_dir / card_directory(fmt) / CARD_FILE).write_text(card)
            client.log_model_artifacts(logged.model_id, str(mlflow_dir))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        _try(lambda: client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED))
        raise
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    return LoggedModelRef(model_id=logged.model_id, model_uri=f"models:/{logged.model_id}", run_id=run_id)


def write_card(client: MlflowClient, model_id: str, fmt: str, card: str) -> None:
    """Replace the model card of a logged model (e.g. once the quality gate has decided)."""
    with tempfile.TemporaryDirectory(prefix="clicktune-card-") as tmp:
        path = Path(tmp) / CARD_FILE
        path.write_text(card)
        client.log_model_artifact(model_id, str(path), artifact_path=card_directory(fmt))


def _save_sentence_transformers(mlflow_dir: Path, model, mlflow_model: Model) -> None:
    import mlflow.sentence_transformers

    mlflow.sentence_transformers.save_model(
        model.query_model, path=str(mlflow_dir), mlflow_model=mlflow_model, signature=ST_SIGNATURE,
        pip_requirements=pip_requirements(FORMAT_SENTENCE_TRANSFORMERS), create_model_card=False,
    )
    model.write_config(mlflow_dir / SENTENCE_TRANSFORMERS_DATA)


#: The modules a pyfunc-wrapped model needs, shipped with it (``code_paths``): paths in the repository.
_BUNDLED = ("__init__.py", "models/__init__.py", "models/base.py", "models/registry.py", "models/text.py",
            "models/clip.py", "experiments/pyfunc_model.py")


def _bundle_code(directory: Path) -> Path:
    """A copy of the ``finetuning`` modules the pyfunc wrapper imports (an empty ``experiments``
    package instead of ours, which pulls in the training stack)."""
    package = Path(__file__).resolve().parents[1]
    target = directory / "finetuning"
    for relative in _BUNDLED:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package / relative, target / relative)
    (target / "experiments" / "__init__.py").write_text('"""Only the pyfunc wrapper of clicktune models."""\n')
    return target


def _save_pyfunc(mlflow_dir: Path, model, tmp: Path, mlflow_model: Model) -> None:
    model_dir = tmp / MODEL_DIR_ARTIFACT
    model.save(model_dir)
    mlflow.pyfunc.save_model(
        path=str(mlflow_dir),
        python_model=str(PYFUNC_CODE_FILE),
        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
        code_paths=[str(_bundle_code(tmp / "code"))],
        pip_requirements=pip_requirements(FORMAT_PYFUNC),
        signature=SIGNATURE,
        mlflow_model=mlflow_model,
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
    if FORMAT_SENTENCE_TRANSFORMERS in mlmodel.flavors:
        directory = local / mlmodel.flavors["python_function"].get("data", SENTENCE_TRANSFORMERS_DATA)
        if (directory / MODEL_CONFIG_FILE).exists():
            return directory
        raise ValueError(f"{model_uri} is not a clicktune model (no {MODEL_CONFIG_FILE} in its model directory)")
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
