"""MLflow "models from code" entry point: logged as the model's code instead of a pickle.

MLflow copies this file into every logged clicktune model and runs it on ``pyfunc.load_model``;
it only needs ``clicktune`` (``finetuning``) importable. Do not import it from our own code.
"""

import mlflow.models

from finetuning.experiments.pyfunc_model import EmbeddingsPyfunc

mlflow.models.set_model(EmbeddingsPyfunc())
