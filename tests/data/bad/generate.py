"""Regenerate the bad-input corpus: `python tests/data/bad/generate.py` (writes the *.json cases here).

Every case is `good.json` (video 000001_mpii_train: 3 labeled 128x96 frames, 2 persons each) with one
defect. README.md is the table of cases and expected outcomes; test_bad_inputs.py reads that table.
Image defects (zero-byte, truncated, huge header, missing frame) are applied by the test to the
frames it writes, so no binary file is kept here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).parent
VIDEO = "000001_mpii_train"
JOINTS = ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle"]


def good() -> dict:
    images, annotations = [], []
    for t in range(3):
        image_id = 10_000_000_000 + 1 * 10_000 + t
        images.append({"id": image_id, "file_name": f"images/train/{VIDEO}/{t:06d}.jpg", "frame_id": image_id,
                       "vid_id": "000001", "is_labeled": True, "nframes": 3, "height": 96, "width": 128,
                       "ignore_regions_x": [], "ignore_regions_y": []})
        for k, (x, y) in enumerate([(10, 8), (70, 20)]):
            kps = []
            for j in range(17):
                kps += [round(x + 4 + (j * 7 + t) % 32, 1), round(y + 4 + (j * 11 + 3 * k) % 52, 1), 1]
            annotations.append({"id": 100 * t + k, "image_id": image_id, "track_id": k, "category_id": 1,
                                "keypoints": kps, "bbox": [x, y, 40, 60], "bbox_head": [x + 12, y, 14, 14],
                                "scores": []})
    return {"images": images, "annotations": annotations,
            "categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": JOINTS}]}


def _ann(d: dict, i: int = 0) -> dict:
    return d["annotations"][i]


def cases() -> dict[str, object]:
    """case name -> file content (a dict, or raw text for unparsable files)."""
    out: dict[str, object] = {"good": good()}

    def case(name, mutate):
        d = copy.deepcopy(good())
        mutate(d)
        out[name] = d

    case("wrong_type_image_id", lambda d: d["images"][0].update(id="first"))
    case("wrong_type_is_labeled", lambda d: d["images"][1].update(is_labeled="yes"))
    case("missing_images", lambda d: d.pop("images"))
    case("missing_keypoints", lambda d: _ann(d, 1).pop("keypoints"))
    case("missing_track_id", lambda d: _ann(d, 2).pop("track_id"))
    case("missing_image_id", lambda d: _ann(d, 0).pop("image_id"))
    case("missing_bbox_head", lambda d: [a.pop("bbox_head") for a in d["annotations"]])
    case("nan_keypoint", lambda d: _ann(d, 3)["keypoints"].__setitem__(4, float("nan")))
    case("infinite_bbox", lambda d: _ann(d, 0)["bbox"].__setitem__(2, float("inf")))
    case("negative_bbox", lambda d: _ann(d, 1).update(bbox=[70, 20, -40, 60]))
    case("zero_bbox", lambda d: _ann(d, 4).update(bbox=[10, 8, 0, 0]))
    case("duplicate_image_id", lambda d: d["images"][2].update(id=d["images"][1]["id"]))
    case("keypoint_count_mismatch", lambda d: _ann(d, 2).update(keypoints=_ann(d, 2)["keypoints"][:48]))
    case("non_list_keypoints", lambda d: _ann(d, 0).update(keypoints="12 40 1 ..."))
    case("string_numbers", lambda d: _ann(d, 5)["keypoints"].__setitem__(0, "14.0"))
    case("bool_coordinate", lambda d: _ann(d, 5)["keypoints"].__setitem__(1, True))
    case("keypoints_outside_image", lambda d: _ann(d, 3)["keypoints"].__setitem__(0, 900.0))
    case("image_id_unknown", lambda d: _ann(d, 4).update(image_id=12345))
    case("track_id_out_of_range", lambda d: _ann(d, 1).update(track_id=10000))
    case("extra_unknown_fields", lambda d: (d.update(info={"note": "extra"}), d["images"][0].update(weather="rain"),
                                             _ann(d, 0).update(confidence=0.5, attributes={"a": [1, 2]})))
    case("one_frame_video", lambda d: (d.update(images=d["images"][:1]),
                                       d.update(annotations=d["annotations"][:2])))
    case("box_outside_image", lambda d: _ann(d, 5).update(bbox=[500, 500, 40, 60]))
    case("tiny_box", lambda d: _ann(d, 4).update(bbox=[10, 8, 2, 2]))
    case("no_visible_joints", lambda d: _ann(d, 1).update(keypoints=[0] * 51))
    case("unicode_video_folder", lambda d: [im.update(file_name=im["file_name"].replace(VIDEO, VIDEO + "_vidéo_ü"))
                                            for im in d["images"]])
    case("wrong_category_joints", lambda d: d["categories"][0].update(keypoints=JOINTS[:15]))
    case("ignore_regions_mismatch", lambda d: d["images"][0].update(ignore_regions_x=[[1, 2, 3]],
                                                                     ignore_regions_y=[]))
    case("image_not_object", lambda d: d["images"].__setitem__(1, "000001.jpg"))
    case("file_name_escapes", lambda d: d["images"][2].update(
        file_name=f"images/train/{VIDEO}/../../../../escaped/000002.jpg"))  # a real JPEG lies there
    out["root_is_list"] = [good()]
    out["zero_byte_json"] = ""
    out["truncated_json"] = json.dumps(good())[:700]
    return out


def main() -> None:
    for name, content in cases().items():
        text = content if isinstance(content, str) else json.dumps(content)  # NaN/Infinity kept as json.dumps writes them
        (HERE / f"{name}.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
