"""The trained model as an MLflow model: the run's "model" artifact loads back and predicts.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    joints = model.predict(crops)  # (B, 3, H, W, 3) uint8 RGB -> (B, 17, 3): x, y (crop pixels), score

The input is a batch of 3-frame person crops (frames t-1, t, t+1) at the model's input size, as
`data/crops` stores them and `vremd.predict` cuts them from a video. The output is what
`predict_crops` decodes, with the heatmap maximum as the third column. The model carries
`final.pt` and this package (`code/vremd`), so it loads in any environment with the locked stack.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec

from vremd.config import Config
from vremd.model.checkpoint import load_trained
from vremd.predict.inference import predict_crops

ARTIFACT = "model"  # the run's artifact folder: runs:/<run id>/model
_ENTRY = "import mlflow\nfrom vremd.predict.mlflow_model import PoseModel\nmlflow.models.set_model(PoseModel())\n"
_REQUIREMENTS = ("torch", "torchvision", "timm", "numpy", "mlflow", "opencv-python-headless", "pyarrow", "pandas")


class PoseModel(mlflow.pyfunc.PythonModel):
    """`predict`: (B, T=3, H, W, 3) uint8 RGB crops -> (B, J, 3) float64 [x, y, score] in crop pixels."""

    def load_context(self, context) -> None:
        self.model, self.cfg = load_trained(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        crops = np.ascontiguousarray(model_input, dtype=np.uint8)  # (B, T, H, W, 3)
        out = predict_crops(self.model, crops, flip_test=self.cfg.train.flip_test)
        return np.concatenate([out["joints_xy"], out["scores"][..., None]], axis=-1)  # (B, J, 3)


def signature(cfg: Config) -> ModelSignature:
    """Tensor shapes the model takes and gives, checked by MLflow on every `predict`."""
    m = cfg.model
    crops = TensorSpec(np.dtype(np.uint8), (-1, 3, m.img_height, m.img_width, 3))
    joints = TensorSpec(np.dtype(np.float64), (-1, m.num_joints, 3))
    return ModelSignature(inputs=Schema([crops]), outputs=Schema([joints]))


def _pins() -> list[str]:
    """The installed versions of the stack the model needs (pip inference would import the model again)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins


@contextmanager
def tracking_uri_as(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI is `uri` inside, and what it was afterwards.

    `mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI in this process's environment, which every
    later `train.main` or `Tracker` in the process would follow; this puts both back.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable


def _logged(client: MlflowClient, run_id: str) -> bool:
    """Whether run `run_id` has its MLflow model (named ARTIFACT) already."""
    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models([experiment], f"source_run_id = '{run_id}' AND name = '{ARTIFACT}'",
                                        max_results=1)
    return len(found) > 0


def log_trained_model(tracking_uri: str, run_id: str, checkpoint: Path, cfg: Config) -> str:
    """Log `checkpoint` (training's final.pt) as the MLflow model of run `run_id`; returns its `runs:/` URI.

    The run is reopened for the upload and closed again as FINISHED. The model is logged "from code":
    MLflow stores `_ENTRY`, a two-line script naming `PoseModel`, and runs it when the model loads.
    A run that has its model already (a finished run returned again: the same final.pt) keeps that one.
    """
    if _logged(MlflowClient(tracking_uri=tracking_uri), run_id):
        return f"runs:/{run_id}/{ARTIFACT}"
    package = Path(__file__).resolve().parents[1]  # vremd/
    with tempfile.TemporaryDirectory(prefix="vremd-mlflow-model-") as tmp:
        entry = Path(tmp) / "vremd_pose_model.py"
        entry.write_text(_ENTRY)
        with tracking_uri_as(tracking_uri), mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")  # its input-example advice
            mlflow.pyfunc.log_model(name=ARTIFACT, python_model=str(entry), artifacts={"checkpoint": str(checkpoint)},
                                    code_paths=[str(package)], signature=signature(cfg), pip_requirements=_pins())
    return f"runs:/{run_id}/{ARTIFACT}"
