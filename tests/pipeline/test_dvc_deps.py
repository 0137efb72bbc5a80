"""dvc.yaml's dependencies are the content a stage reads: pretrained weights for `train`, the detection
file for `crops`. Before: a changed weights file or detection file (same path) left both stages "up to date".

Real DVC in a temporary copy of the repo; `dvc commit` records the present state without running stages.
"""

import pytest
from fresh_clone import copy_checkout, smoke_demo_params
from test_dvc_repro import _run

pytestmark = pytest.mark.slow


@pytest.fixture()
def project(tmp_path):
    copy_checkout(tmp_path, params=smoke_demo_params())  # the repo's own .dvc/, without a remote; no dvc.lock
    for out in ("data/raw", "data/crops", "data/index", "models"):  # stand-ins: only the deps are under test
        (tmp_path / out).mkdir(parents=True)
        (tmp_path / out / "x").write_text(out)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train_curve.csv").write_text("epoch,loss\n1,0.5\n")
    return tmp_path


def _changed(project, stage: str) -> str:
    out = _run(["dvc", "status", stage], project)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("stage, folder, name", [("train", "weights", "vitpose-l-coco.pth"),
                                                 ("crops", "detections", "val_boxes.json")])
def test_a_changed_file_in_a_stage_input_folder_reruns_the_stage(project, stage, folder, name):
    (project / folder / name).write_bytes(b"first content")
    committed = _run(["dvc", "commit", "-f", stage], project)
    assert committed.returncode == 0, committed.stderr
    assert "up to date" in _changed(project, stage).lower()
    (project / folder / name).write_bytes(b"other content")  # same path, new content
    status = _changed(project, stage)
    assert stage in status and folder in status and "modified" in status, status
