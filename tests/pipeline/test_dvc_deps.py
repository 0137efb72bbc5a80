"""dvc.yaml's dependencies are the content a stage reads: pretrained weights for `train` and the ablation
tables, the detection file for `crops`, the params keys it reads. Before: a changed weights file or detection
file (same path) left those stages "up to date" (the tables until issue 32), and so did a changed
`detect.oks_nms` for `train` and `evaluate`, which score poses with it.

Real DVC in a temporary copy of the repo; `dvc commit` records the present state without running stages.
"""

import pytest
import yaml
from fresh_clone import copy_checkout, smoke_demo_params
from test_dvc_repro import _run

pytestmark = pytest.mark.slow


@pytest.fixture()
def project(tmp_path):
    copy_checkout(tmp_path, params=smoke_demo_params())  # the repo's own .dvc/, without a remote; no dvc.lock
    for out in ("data/raw", "data/crops", "data/index", "data/tables/posetrack17", "models", "reports",
                "experiments/results/table6"):
        (tmp_path / out).mkdir(parents=True)  # stand-ins: only the deps are under test
        (tmp_path / out / "x").write_text(out)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train_curve.csv").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "metrics" / "ap.json").write_text('{"Mean": 1.0}\n')
    return tmp_path


def _changed(project, stage: str) -> str:
    out = _run(["dvc", "status", stage], project)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("stage, folder, name", [("train", "weights", "vitpose-l-coco.pth"),
                                                 ("experiments/dvc.yaml:table6", "weights", "vitpose-l-coco.pth"),
                                                 ("crops", "detections", "val_boxes.json")])
def test_a_changed_file_in_a_stage_input_folder_reruns_the_stage(project, stage, folder, name):
    (project / folder / name).write_bytes(b"first content")
    committed = _run(["dvc", "commit", "-f", stage], project)
    assert committed.returncode == 0, committed.stderr
    assert "up to date" in _changed(project, stage).lower()
    (project / folder / name).write_bytes(b"other content")  # same path, new content
    status = _changed(project, stage)
    assert stage.split(":")[-1] in status and folder in status and "modified" in status, status


def test_a_changed_oks_nms_reruns_train_and_evaluate(project):
    (project / "weights" / "vitpose-demo.pth").write_bytes(b"weights")
    for stage in ("train", "evaluate"):
        committed = _run(["dvc", "commit", "-f", stage], project)
        assert committed.returncode == 0, committed.stderr
    assert "up to date" in _changed(project, "evaluate").lower()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profiles"]["demo"]["detect"]["oks_nms"] = 0.0  # the issue's `dvc exp run -S ...oks_nms=0.0`
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("train", "evaluate"):
        status = _changed(project, stage)
        assert f"{stage}:" in status and "profiles.demo.detect.oks_nms" in status, status
