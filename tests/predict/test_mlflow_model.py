"""The trained model logged as an MLflow model loads back through `mlflow.pyfunc` and predicts as
`vremd.predict` does."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from predict_fixtures import save_smoke_checkpoint
from vremd.model.checkpoint import load_trained, saved_config
from vremd.predict.inference import predict_crops
from vremd.predict.mlflow_model import log_trained_model, tracking_uri_as
from vremd.train.tracking import Tracker


@pytest.fixture()
def trained(tmp_path):
    checkpoint = save_smoke_checkpoint(tmp_path / "final.pt", seed=3, pretrained="")
    return saved_config(checkpoint), checkpoint


def test_logged_model_loads_back_and_predicts_as_the_predict_path(trained, tmp_path):
    cfg, checkpoint = trained
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    tracker = Tracker.start(uri, "vremd-test", "run", {"a": 1}, {})
    tracker.finish()
    model_uri = log_trained_model(uri, tracker.run_id, checkpoint, cfg)
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    assert model_uri == f"runs:/{tracker.run_id}/model"

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"  # reopened for the upload, closed again
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in logged] == [tracker.run_id]  # the UI's Model column
    assert log_trained_model(uri, tracker.run_id, checkpoint, cfg) == model_uri  # a returned run: logged once
    assert len(client.search_logged_models(experiment_ids=[run.info.experiment_id])) == 1

    with tracking_uri_as(uri):
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    assert os.environ.get("MLFLOW_TRACKING_URI") == before  # nothing leaks to later runs in this process
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 3, cfg.model.img_height, cfg.model.img_width, 3), dtype=np.uint8)
    got = pyfunc.predict(crops)  # (B, J, 3)
    direct = predict_crops(load_trained(checkpoint)[0], crops)
    assert got.shape == (2, cfg.model.num_joints, 3)
    np.testing.assert_array_equal(got[..., :2], direct["joints_xy"])
    np.testing.assert_array_equal(got[..., 2], direct["scores"])


def test_signature_refuses_crops_of_another_size(trained, tmp_path):
    cfg, checkpoint = trained
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.start(uri, "vremd-test", "run", {}, {})
    with tracking_uri_as(uri):
        pyfunc = mlflow.pyfunc.load_model(log_trained_model(uri, tracker.run_id, checkpoint, cfg))
    wrong = np.zeros((1, 3, cfg.model.img_height + 8, cfg.model.img_width, 3), dtype=np.uint8)
    with pytest.raises(Exception, match="shape"):
        pyfunc.predict(wrong)
