"""MLflow "models from code" entry point: logged as the model's code instead of a pickle.

MLflow copies this file into every pyfunc-wrapped clicktune model (two towers, CLIP) and runs it on
``pyfunc.load_model``; the ``finetuning`` modules it imports ship with the model (``code/``, see
:mod:`finetuning.experiments.model_logging`), so clicktune need not be installed. Do not import it
from our own code.
"""

import mlflow.models

from finetuning.experiments.pyfunc_model import EmbeddingsPyfunc

mlflow.models.set_model(EmbeddingsPyfunc())
