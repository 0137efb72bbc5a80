"""`python -m vremd.predict` end to end on a synthetic mp4, the 3-frame window, and every bad input."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from predict_fixtures import make_tiny_video, save_smoke_checkpoint

from vremd.config import smoke_config
from vremd.data.crops import extract_video
from vremd.data.posetrack import POSEVAL_FILE_NAME, read_video
from vremd.model.checkpoint import load_trained
from vremd.predict.boxes_io import BoxFileError, assign_tracks, load_boxes
from vremd.predict.cli import main
from vremd.predict.inference import predict_crops
from vremd.predict.overlay import count_frames
from vremd.predict.video_poses import frame_windows, predict_video
from vremd.predict.video import VideoReadError, probe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    video = make_tiny_video(root)
    ckpt = save_smoke_checkpoint(root / "final.pt")
    return video, ckpt, root


def test_cli_end_to_end_mp4_with_tracking(tiny, tmp_path, capsys):
    video, ckpt, _ = tiny
    out, overlay = tmp_path / "pred" / "x.json", tmp_path / "overlay.mp4"
    rc = main([str(video.mp4), "--boxes", str(video.coco_json), "--track", "--checkpoint", str(ckpt),
               "--out", str(out), "--overlay", str(overlay), "--batch-size", "3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    pred = read_video(out)  # the project's strict PoseTrack reader accepts it
    assert len(pred.frames) == video.num_frames
    assert all(POSEVAL_FILE_NAME.search(f.file_name) for f in pred.frames)
    gt = read_video(video.gt_json)
    assert [len(f.persons) for f in pred.frames] == [len(f.persons) for f in gt.frames]
    for frame in pred.frames:
        ids = [p.track_id for p in frame.persons]
        assert len(set(ids)) == len(ids)  # poseval rejects repeated ids in a frame
        for p in frame.persons:
            assert p.scores is not None and len(p.scores) == 17
            assert np.all(p.keypoints[:, 2] == 1)
            x, y, w, h = p.bbox_xywh  # joints come back in image pixels, around their box
            margin = 0.3 * max(w, h)
            assert np.all((p.keypoints[:, 0] > x - margin) & (p.keypoints[:, 0] < x + w + margin))
    # the GT's tracks map one-to-one onto predicted tracks (same person -> same id across frames)
    pairs = {(g.track_id, p.track_id) for fg, fp in zip(gt.frames, pred.frames)
             for g, p in zip(fg.persons, fp.persons)}
    assert len({g for g, _ in pairs}) == len(pairs) == len({p for _, p in pairs})
    assert count_frames(overlay) == video.num_frames
    assert "tracks" in capsys.readouterr().out


def test_frame_folder_with_posetrack_boxes_mirrors_gt_images(tiny, tmp_path):
    video, ckpt, _ = tiny
    out, frames_out = tmp_path / "p.json", tmp_path / "overlay_frames"
    rc = main([str(video.frames_dir), "--boxes", str(video.gt_json), "--checkpoint", str(ckpt),
               "--out", str(out), "--overlay", str(frames_out), "--quiet"])
    assert rc == 0
    raw_gt, raw_pred = json.loads(video.gt_json.read_text()), json.loads(out.read_text())
    assert [i["file_name"] for i in raw_pred["images"]] == [i["file_name"] for i in raw_gt["images"]]
    assert [i["id"] for i in raw_pred["images"]] == [i["id"] for i in raw_gt["images"]]
    gt, pred = read_video(video.gt_json), read_video(out)
    assert [[p.track_id for p in f.persons] for f in pred.frames] == [[p.track_id for p in f.persons] for f in gt.frames]
    assert len(list(frames_out.glob("*.jpg"))) == video.num_frames


def test_one_frame_video(tiny, tmp_path, capsys):
    video, ckpt, _ = tiny
    folder = tmp_path / "one"
    folder.mkdir()
    cv2.imwrite(str(folder / "000000.jpg"), video.frames_bgr[0])
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps([{"image_id": 0, "bbox": [30, 20, 30, 60], "score": 1.0},
                                 {"image_id": 0, "bbox": [500, 20, 30, 60], "score": 1.0}]))  # off the image
    rc = main([str(folder), "--boxes", str(boxes), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.json"),
               "--overlay", str(tmp_path / "one.avi"), "--quiet"])
    assert rc == 0
    assert "frame 0 box 1" in capsys.readouterr().err  # the skipped box is reported
    assert len(read_video(tmp_path / "o.json").frames[0].persons) == 1
    assert count_frames(tmp_path / "one.avi") == 1


def test_window_is_t_minus_1_t_t_plus_1_clamped(tiny):
    video, _, _ = tiny
    windows = list(frame_windows(video.frames_dir))
    assert [t for t, _, _ in windows] == list(range(video.num_frames))
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(video.frames_dir.glob("*.jpg"))]
    expect = {0: (0, 0, 1), 3: (2, 3, 4), video.num_frames - 1: (video.num_frames - 2,) + (video.num_frames - 1,) * 2}
    for t, idx in expect.items():
        for got, i in zip(windows[t][2], idx):
            np.testing.assert_array_equal(got, rgb[i])


def test_predictions_equal_training_crops(tiny):
    """Same crops as the training data path (vremd.data.crops.extract_video) -> the same joints."""
    video, ckpt, _ = tiny
    model, cfg = load_trained(ckpt)
    gt = read_video(video.gt_json)
    labeled = type(gt)(gt.name, gt.split, gt.json_path, tuple(
        type(f)(f.image_id, f.frame_index, f.file_name, True, f.persons, f.ignore_regions) for f in gt.frames),
        gt.image_hw)
    raw_crops = dataclasses.replace(cfg.crops, jpeg_quality=0)  # training's pixels before its JPEG storage
    crops = extract_video(labeled, "val", video.dataset_dir, raw_crops, "error")
    ref = predict_crops(model, np.stack([crops.sample(k) for k in range(len(crops.rows))]))
    info = probe(video.frames_dir)
    boxes = assign_tracks(load_boxes(video.gt_json, info.frame_names), track=False)
    results, stats = predict_video(model, cfg, video.frames_dir, boxes, batch_size=4, progress=False)
    assert stats.crops == len(crops.rows) > 0
    got = np.concatenate([r["joints_xy"] for r in results])  # frame order = extract order
    for k, row in enumerate(crops.rows):
        affine = np.asarray(row["crop_to_image"]).reshape(2, 3)
        expected = ref["joints_xy"][k] @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(got[k], expected, atol=1e-3)


def test_flip_test_follows_the_checkpoints_config_unless_the_cli_says(tiny, tmp_path):
    """As validation scored the model: `train.flip_test` of the checkpoint's config, overridden by the flag."""
    video, ckpt, _ = tiny
    raw = torch.load(ckpt, weights_only=True)
    raw["config"]["train"]["flip_test"] = True
    flipping = tmp_path / "flipping.pt"
    torch.save(raw, flipping)

    def joints(*flags):
        out = tmp_path / f"pred{'_'.join(flags)}.json"
        assert main([str(video.frames_dir), "--boxes", str(video.gt_json), "--checkpoint", str(flipping),
                     "--out", str(out), "--quiet", *flags]) == 0
        return np.concatenate([p.keypoints for f in read_video(out).frames for p in f.persons])

    default = joints()
    np.testing.assert_array_equal(default, joints("--flip-test"))
    assert not np.array_equal(default, joints("--no-flip-test"))


# ------------------------------------------------------------------------------------ bad input


def _run(args, capsys):
    rc = main([*map(str, args), "--quiet"])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_unreadable_video(tiny, tmp_path, capsys):
    _, ckpt, _ = tiny
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    boxes = tmp_path / "b.json"
    boxes.write_text("[]")
    rc, err = _run([bad, "--boxes", boxes, "--checkpoint", ckpt, "--out", tmp_path / "o.json"], capsys)
    assert rc == 2 and "broken.mp4" in err and "not a readable video" in err and err.count("\n") == 0
    with pytest.raises(VideoReadError, match="no such"):
        probe(tmp_path / "missing.avi")


def test_boxes_for_frames_that_do_not_exist(tiny, tmp_path, capsys):
    video, ckpt, _ = tiny
    boxes = tmp_path / "late.json"
    boxes.write_text(json.dumps([{"image_id": video.num_frames + 3, "bbox": [1, 1, 20, 40], "score": 1.0}]))
    rc, err = _run([video.mp4, "--boxes", boxes, "--checkpoint", ckpt, "--out", tmp_path / "o.json"], capsys)
    assert rc == 2 and "late.json" in err and f"frame(s) [{video.num_frames + 3}]" in err
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("content", ["[]", '{"images": [], "annotations": []}', "{not json"])
def test_empty_or_malformed_box_file(tiny, tmp_path, capsys, content):
    video, ckpt, _ = tiny
    boxes = tmp_path / "empty.json"
    boxes.write_text(content)
    rc, err = _run([video.mp4, "--boxes", boxes, "--checkpoint", ckpt, "--out", tmp_path / "o.json"], capsys)
    assert rc == 2 and "empty.json" in err


def test_box_field_errors_name_the_entry(tiny, tmp_path):
    video, _, _ = tiny
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 0, "bbox": [1, 2, 3]}]))
    with pytest.raises(BoxFileError, match=r"bad.json: \[0\]: bbox"):
        load_boxes(bad, probe(video.mp4).frame_names)


def test_checkpoint_of_another_config_names_mismatched_keys(tiny, tmp_path, capsys):
    video, ckpt, _ = tiny
    other = save_smoke_checkpoint(tmp_path / "other.pt", dim=48)
    raw = torch.load(other, weights_only=True)
    raw["config"] = torch.load(ckpt, weights_only=True)["config"]  # weights of dim 48, config of dim 32
    torch.save(raw, other)
    rc, err = _run([video.mp4, "--boxes", video.coco_json, "--checkpoint", other, "--out", tmp_path / "o.json"],
                   capsys)
    assert rc == 2 and "other.pt" in err and "misshapen" in err and "(checkpoint (48" in err


def test_checkpoint_of_an_older_model_layout_is_refused(tiny, tmp_path, capsys):
    video, ckpt, _ = tiny
    raw = torch.load(ckpt, weights_only=True)
    del raw["model"]["arch_version"]  # what every checkpoint saved before ARCH_VERSION 2 looks like
    old = tmp_path / "old.pt"
    torch.save(raw, old)
    rc, err = _run([video.mp4, "--boxes", video.coco_json, "--checkpoint", old, "--out", tmp_path / "o.json"],
                   capsys)
    assert rc == 2 and "old.pt" in err and "saved before version 2" in err


def test_missing_and_garbage_checkpoint(tiny, tmp_path, capsys):
    video, _, _ = tiny
    rc, err = _run([video.mp4, "--boxes", video.coco_json, "--checkpoint", tmp_path / "nope.pt",
                    "--out", tmp_path / "o.json"], capsys)
    assert rc == 2 and "nope.pt: no such checkpoint" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    rc, err = _run([video.mp4, "--boxes", video.coco_json, "--checkpoint", junk, "--out", tmp_path / "o.json"],
                   capsys)
    assert rc == 2 and "junk.pt: unreadable checkpoint" in err


def test_bare_state_dict_uses_the_given_config(tiny, tmp_path):
    video, ckpt, _ = tiny
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(ckpt, weights_only=True)["model"], bare)
    model, cfg = load_trained(bare, fallback_cfg=smoke_config())
    assert cfg.model.dim == 32 and not model.training


def _to_vitpose_layout(vit_sd: dict) -> dict:
    """The inverse of the backbone's ViTPose conversion, for a test checkpoint (class slot zero)."""
    out = {}
    for key, value in vit_sd.items():
        if key == "pos_embed":  # (1, N, D) -> (1, 1 + N, D) with a zero class slot
            out["backbone.pos_embed"] = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
        elif key.startswith("norm."):
            out["backbone.last_norm." + key[len("norm."):]] = value
        else:
            out["backbone." + key] = value
    return out


def test_vitpose_backbone_plus_heads_checkpoint(tiny, tmp_path, capsys):
    video, ckpt, _ = tiny
    full = torch.load(ckpt, weights_only=True)
    model, _ = load_trained(ckpt)
    vitpose = tmp_path / "vitpose.pth"
    torch.save({"state_dict": _to_vitpose_layout(model.backbone.vit.state_dict())}, vitpose)
    heads = tmp_path / "heads.pt"
    torch.save({"model": {k: v for k, v in full["model"].items() if not k.startswith("backbone.")},
                "config": full["config"]}, heads)
    rebuilt, _ = load_trained(heads, vitpose=vitpose)
    crops = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(predict_crops(rebuilt, crops)["heatmaps"], predict_crops(model, crops)["heatmaps"],
                               atol=1e-5)
    # without the ViTPose file the heads checkpoint is incomplete: a clear error naming missing keys
    rc, err = _run([video.mp4, "--boxes", video.coco_json, "--checkpoint", heads, "--out", tmp_path / "o.json"],
                   capsys)
    assert rc == 2 and "heads.pt" in err and "missing keys: backbone." in err
    rc, err = _run([video.mp4, "--boxes", video.coco_json, "--checkpoint", heads, "--vitpose", vitpose,
                    "--out", tmp_path / "o.json"], capsys)
    assert rc == 0, err


def test_coco_dataset_dict_maps_file_names_to_frames(tiny, tmp_path):
    video, _, _ = tiny
    names = probe(video.mp4).frame_names
    boxes = tmp_path / "coco.json"
    boxes.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "some/dir/000003.jpg"}, {"id": 9, "file_name": "frame_5.png"}],
        "annotations": [
            {"image_id": 7, "bbox": [10, 10, 20, 40], "category_id": 1, "score": 0.9},
            {"image_id": 7, "bbox": [50, 10, 20, 40], "category_id": 1, "score": 0.1},  # below --min-score
            {"image_id": 9, "bbox": [10, 10, 20, 40], "category_id": 1},  # GT-style: no score
            {"image_id": 9, "bbox": [10, 10, 20, 40], "category_id": 3, "score": 1.0},  # not a person
        ],
    }))
    got = load_boxes(boxes, names, min_score=0.5)
    assert [len(f.scores) for f in got.frames] == [0, 0, 0, 1, 0, 1, 0][:video.num_frames]
    folder_names = tuple(p.name for p in sorted(video.frames_dir.glob("*.jpg")))
    assert load_boxes(boxes, folder_names, min_score=0.5).frames[3].boxes_xywh.tolist() == [[10, 10, 20, 40]]


def test_pipeline_cli_is_the_library_cli():
    import pipeline.predict

    assert pipeline.predict.main is main


def test_a_posetrack_box_file_out_of_frame_order_puts_each_box_on_its_own_frame(tiny, tmp_path):
    """Issue 32 item 7: a PoseTrack json's boxes go to the frame its file names name, whatever the list order,
    and the predictions list the images in the json's own order (poseval pairs files by position)."""
    video, ckpt, _ = tiny
    data = json.loads(video.gt_json.read_text())
    data["images"].reverse()
    shuffled = tmp_path / "annotations" / "val" / video.gt_json.name
    shuffled.parent.mkdir(parents=True)
    shuffled.write_text(json.dumps(data))
    preds = {}
    for name, boxes in (("sorted", video.gt_json), ("reversed", shuffled)):
        out = tmp_path / f"{name}.json"
        assert main([str(video.frames_dir), "--boxes", str(boxes), "--checkpoint", str(ckpt), "--out", str(out),
                     "--quiet"]) == 0
        preds[name] = json.loads(out.read_text())
    assert [im["id"] for im in preds["reversed"]["images"]] == [im["id"] for im in data["images"]]

    def poses(pred: dict) -> dict:  # image id -> [(track id, keypoints)]
        return {im["id"]: sorted((a["track_id"], a["keypoints"]) for a in pred["annotations"] if a["image_id"] == im["id"])
                for im in pred["images"]}

    assert poses(preds["reversed"]) == poses(preds["sorted"])
    assert sum(map(len, poses(preds["sorted"]).values())) == sum(len(f.persons) for f in read_video(video.gt_json).frames)
