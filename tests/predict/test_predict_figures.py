"""Visual reports: PCKh@0.5 wrong-joint marking, side-by-side and sample figures written as real PNGs."""

import cv2
import numpy as np
import pytest
from predict_fixtures import make_tiny_video, save_smoke_checkpoint

from vremd.model.checkpoint import load_trained
from vremd.predict.figures import GroundTruth, compare_figure, head_size_from_box, sample_figure, wrong_joints
from vremd.predict.reports import FigureInputError, compare_checkpoints, sample_report


def _png(path):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable PNG"
    return image


def test_head_size_is_poseval_normaliser():
    assert head_size_from_box([0, 0, 30, 40]) == pytest.approx(0.6 * 50)


def test_wrong_joints_uses_pckh_half_head_size():
    gt = GroundTruth(np.zeros((1, 17, 2)), np.ones((1, 17)), np.array([20.0]))
    pred = np.zeros((1, 17, 2))
    pred[0, 3] = (10.0, 0.0)  # exactly 0.5 head sizes: still correct (inclusive)
    pred[0, 4] = (10.01, 0.0)  # just beyond: wrong
    pred[0, 5] = (0.0, 50.0)  # far, but the GT joint is not annotated: not counted
    gt.visible[0, 5] = 0
    assert np.flatnonzero(wrong_joints(pred, gt)[0]).tolist() == [4]


def test_compare_figure_circles_only_wrong_joints(tmp_path):
    rng = np.random.default_rng(0)
    gt_xy = rng.uniform(20, 100, (2, 17, 2))
    gt = [GroundTruth(gt_xy, np.ones((2, 17)), np.array([15.0, 15.0]))] * 3
    good, bad = gt_xy + 1.0, gt_xy + 40.0
    images = [np.full((96, 128, 3), 80, np.uint8)] * 3
    out = compare_figure(images, [good] * 3, [bad] * 3, tmp_path / "f" / "cmp.png", ("good", "bad"), gt)
    image = _png(out)
    red = (image[..., 2] > 200) & (image[..., 1] < 60) & (image[..., 0] < 60)
    assert red.sum() > 100  # the bad row carries red circles ...
    top = red[: image.shape[0] // 2]
    assert top.sum() == 0  # ... the good row none
    with pytest.raises(ValueError, match="3 frames but 2"):
        compare_figure(images, [good] * 2, [bad] * 3, tmp_path / "x.png")


def test_sample_figure_from_model_aux_outputs(tmp_path):
    model, _ = load_trained(save_smoke_checkpoint(tmp_path / "c.pt"))
    crops = np.random.default_rng(1).integers(0, 255, (3, 64, 48, 3), dtype=np.uint8)
    out = sample_report(model, crops, tmp_path / "sample.png")
    assert _png(out).shape[0] > 300
    # without BMD there are no sampling points: the figure says so instead of failing
    heatmaps = np.random.default_rng(2).random((17, 16, 12)).astype(np.float32)
    sample_figure(crops, heatmaps, tmp_path / "nobmd.png", (4, 3), human_mask=np.ones((3, 12)))
    _png(tmp_path / "nobmd.png")


def test_cli_writes_sample_and_comparison_figures(tmp_path, capsys):
    """The CLI end to end with GT boxes: the compare figure pairs predictions with GT by track id."""
    from vremd.predict.cli import main

    video = make_tiny_video(tmp_path)
    a = save_smoke_checkpoint(tmp_path / "a.pt", seed=0)
    b = save_smoke_checkpoint(tmp_path / "b.pt", seed=1)
    rc = main([str(video.frames_dir), "--boxes", str(video.gt_json), "--checkpoint", str(a), "--out",
               str(tmp_path / "p.json"), "--sample-figure", str(tmp_path / "s.png"), "--compare", str(b),
               "--figure", str(tmp_path / "c.png"), "--figure-frames", "0,3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    _png(tmp_path / "s.png")
    assert _png(tmp_path / "c.png").shape[1] > _png(tmp_path / "c.png").shape[0] * 0.6  # 2 rows x 2 frames
    with pytest.raises(FigureInputError, match=r"frames \[99\] do not exist"):
        compare_checkpoints(a, b, video.mp4, video.gt_json, [0, 99], tmp_path / "no.png")
