"""MLflow models-from-code entry point for the registered zsexp retrieval model (see zsexp.serving)."""

import mlflow

from zsexp.serving import ZsexpRetrievalModel

mlflow.models.set_model(ZsexpRetrievalModel())
