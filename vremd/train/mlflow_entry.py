"""The logged MLflow model's code entry (MLflow "models from code"): it names the model class to load.

MLflow runs this file when `mlflow.pyfunc.load_model` loads a run's "model" artifact; importing it
anywhere else registers the model again, so only `vremd.train.mlflow_model` refers to it, by path.
"""

import mlflow

from vremd.train.mlflow_model import PoseModel

mlflow.models.set_model(PoseModel())
