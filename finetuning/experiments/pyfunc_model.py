"""The MLflow pyfunc face of a clicktune model that is not one sentence-transformers tower (two
towers, CLIP): ``predict`` turns texts into embeddings. (A single tower is logged with the
``sentence_transformers`` flavour instead.) This module and ``finetuning.models`` are copied into
every such model, so they import nothing else of ours.

Nothing of ours is pickled: the logged MLflow model holds the model directory written by
``EmbeddingsModelInterface.save`` as the artifact ``model_dir`` and the few lines of
:mod:`finetuning.experiments.pyfunc_code` ("models from code"), which build this wrapper;
``load_context`` loads the directory with :func:`finetuning.models.registry.load_model`.

    >>> m = mlflow.pyfunc.load_model("models:/my-line@candidate")          # doctest: +SKIP
    >>> m.predict(pd.DataFrame({"text": ["a query"]}), params={"tower": "query"}).shape
    (1, 32)
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np

MODEL_DIR_ARTIFACT = "model_dir"


class EmbeddingsPyfunc(mlflow.pyfunc.PythonModel):
    """Embeds the ``text`` column (or a list of strings) with the query or the items tower."""

    def load_context(self, context: Any) -> None:
        from finetuning.models.registry import load_model

        self.model = load_model(context.artifacts[MODEL_DIR_ARTIFACT])
        self.model.eval()

    # No type hints on predict: the logged signature (a ``text`` column + a ``tower`` param) is
    # the contract; MLflow warns about the missing hints once at import, which is harmless.
    def predict(self, context, model_input, params=None):
        texts = _texts(model_input)
        tower = (params or {}).get("tower", "query")
        if tower == "query":
            embeddings = self.model.encode_queries(texts)
        elif tower == "items":
            embeddings = self.model.encode_items(texts)
        else:
            raise ValueError(f"tower must be 'query' or 'items', not {tower!r}")
        return embeddings.detach().cpu().numpy().astype(np.float32)


def _texts(model_input: Any) -> list[str]:
    if hasattr(model_input, "columns"):  # pandas DataFrame
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(value) for value in model_input[column].tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(value) for value in model_input]
