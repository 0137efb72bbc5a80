"""poseval-exact per-joint AP: one hand-computed case per rule of docs/poseval_spec.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poseval_fixtures import poseval_real
from benchmarks.eval_speed import make_video
from vremd.eval.posetrack_ap_reference import reference_evaluate
from vremd.data.joints import JOINT_NAMES
from vremd.eval.poseval_io import POSEVAL_JOINTS, PoseTrackEvalError, read_frames
from vremd.eval.posetrack_ap import evaluate_dirs, evaluate_frames, evaluate_json, joint_ap

REAL = poseval_real()
HEAD = [0.0, 0.0, 30.0, 40.0]  # bbox_head: diagonal 50, head size 0.6 * 50 = 30 px, PCKh radius 15 px
HS = 0.6 * math.hypot(30.0, 40.0)
CATS = [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(JOINT_NAMES)}]


def kps(**joints) -> list[float]:
    """Flat 17x3 keypoints; joints given by COCO-slot name as (x, y) or (x, y, v); others (0, 0, 0)."""
    out = [0.0] * 51
    for name, val in joints.items():
        i = JOINT_NAMES.index(name)
        out[3 * i:3 * i + 3] = [float(val[0]), float(val[1]), float(val[2] if len(val) > 2 else 1)]
    return out


def gt_person(track: int = 0, head=HEAD, **joints) -> dict:
    return {"track_id": track, "keypoints": kps(**joints), "bbox_head": list(head)}


def pred(track: int = 0, score: float = 0.5, scores: dict | None = None, **joints) -> dict:
    s = [score] * 17
    for name, v in (scores or {}).items():
        s[JOINT_NAMES.index(name)] = v
    return {"track_id": track, "keypoints": kps(**joints), "scores": s}


def video(frames: list[list[dict]], name: str = "000001_mpii_test", ignore: dict | None = None,
          labeled: list[bool] | None = None) -> dict:
    """A PoseTrack-2018 dict with one image per entry of `frames` (each a list of annotations)."""
    images, anns = [], []
    for f, persons in enumerate(frames):
        image = {"id": 1000 + f, "file_name": f"images/val/{name}/{f:06d}.jpg",
                 "is_labeled": bool(persons) if labeled is None else labeled[f]}
        if ignore and f in ignore:
            image["ignore_regions_x"] = [[p[0] for p in poly] for poly in ignore[f]]
            image["ignore_regions_y"] = [[p[1] for p in poly] for poly in ignore[f]]
        images.append(image)
        anns += [{**p, "image_id": 1000 + f, "id": len(anns), "category_id": 1} for p in persons]
    return {"images": images, "annotations": anns, "categories": CATS}


def ap(gt_frames, pred_frames, protocol="posetrack18", **kw) -> dict[str, float]:
    return evaluate_json([video(gt_frames, **kw)], [video(pred_frames)], protocol=protocol).per_joint


def nose(result):
    return result["nose"]


# ---------------------------------------------------------------------------------------------
# official numbers on real PoseTrack18 files


def test_real_copy_scores_100_on_every_joint():
    result = evaluate_dirs(REAL / "gt", REAL / "copy" / "pred")
    assert all(v == pytest.approx(100.0, abs=1e-9) for v in result.per_joint.values())
    assert result.table["Total"] == pytest.approx(100.0, abs=1e-9)


def test_real_perturbed_total_is_official_81_16():
    result = evaluate_dirs(REAL / "gt", REAL / "perturbed" / "pred")
    assert round(result.table["Total"], 2) == 81.16
    assert result.n_frames == 3


# ---------------------------------------------------------------------------------------------
# §1 presence, §3 threshold and matching


def test_absent_only_if_all_three_zero():
    # GT nose with v=0 but coordinates is annotated: one GT joint, matched by the prediction
    r = ap([[gt_person(nose=(50, 50, 0), head_top=(60, 60))]], [[pred(nose=(50, 50), head_top=(60, 60))]])
    assert nose(r) == pytest.approx(100.0)
    # predicted keypoint with v=0 and coordinates still counts as a prediction (TP here)
    r = ap([[gt_person(nose=(50, 50), head_top=(60, 60))]], [[pred(nose=(50, 50, 0), head_top=(60, 60))]])
    assert nose(r) == pytest.approx(100.0)
    # predicted (0, 0, 1) is a prediction at the origin: a false positive for a GT nose far away
    r = ap([[gt_person(nose=(50, 50), head_top=(60, 60))]], [[pred(nose=(0, 0, 1), head_top=(60, 60))]])
    assert nose(r) == 0.0 and r["head_top"] == pytest.approx(100.0)
    # GT (0, 0, 0) is absent: the matched prediction's nose is a FP and nose has no GT -> NaN
    r = ap([[gt_person(head_top=(60, 60))]], [[pred(nose=(50, 50), head_top=(60, 60))]])
    assert math.isnan(nose(r))


def test_pckh_threshold_is_inclusive_at_exactly_half_head_size():
    gt = [[gt_person(nose=(0, 0, 1), head_top=(100, 100))]]
    at = ap(gt, [[pred(nose=(0.5 * HS, 0), head_top=(100, 100))]])
    assert nose(at) == pytest.approx(100.0)
    beyond = ap(gt, [[pred(nose=(np.nextafter(0.5 * HS, 1e9), 0), head_top=(100, 100))]])
    assert nose(beyond) == 0.0


def test_two_step_assignment_prediction_loses_its_gt():
    a = gt_person(0, nose=(100, 100), head_top=(100, 60))
    b = gt_person(1, nose=(300, 100), head_top=(300, 60))
    p0 = pred(0, scores={"nose": 0.9, "head_top": 0.9}, nose=(100, 100), head_top=(100, 60))
    # P1 has PCK 1/2 with A (nose) and 1/2 with B (head_top): the tie keeps A (lowest index), A takes
    # P0 (PCK 1), so P1 ends unmatched although B was free; an optimal assignment would give it B.
    p1 = pred(1, scores={"nose": 0.8, "head_top": 0.8}, nose=(101, 100), head_top=(300, 60))
    r = ap([[a, b]], [[p0, p1]])
    assert r["head_top"] == pytest.approx(50.0)  # TP 0.9, FP 0.8, 2 GT
    assert nose(r) == pytest.approx(50.0)
    # P1 close to A on both joints: A still takes P0, P1 is all FP
    p1_on_a = pred(1, scores={"nose": 0.8, "head_top": 0.8}, nose=(101, 100), head_top=(101, 60))
    r = ap([[a, b]], [[p0, p1_on_a]])
    assert nose(r) == pytest.approx(50.0) and r["head_top"] == pytest.approx(50.0)


def test_pck_ties_go_to_lowest_index():
    # Two identical predictions on one GT: the first (lower index) is matched, the second is FP
    g = gt_person(0, nose=(100, 100), head_top=(100, 60))
    first = pred(0, scores={"nose": 0.3}, nose=(100, 100), head_top=(100, 60))
    second = pred(1, scores={"nose": 0.9}, nose=(100, 100), head_top=(100, 60))
    r = ap([[g]], [[first, second]])
    # ranking: FP@0.9 then TP@0.3 -> precision 1/2 at recall 1 -> AP 50
    assert nose(r) == pytest.approx(50.0)
    r = ap([[g]], [[second, first]])  # now the 0.9 one comes first and wins
    assert nose(r) == pytest.approx(100.0)


def test_joint_predicted_where_gt_has_none_is_false_positive():
    g = gt_person(0, nose=(100, 100), head_top=(100, 60))
    p = pred(0, nose=(100, 100), head_top=(100, 60), left_wrist=(10, 10))
    r = ap([[g, gt_person(1, left_wrist=(500, 500), nose=(500, 520))]], [[p]])
    assert r["left_wrist"] == 0.0  # predicted, GT has wrists elsewhere (other person), label 0


def test_unmatched_predictions_emit_false_positives_for_every_joint():
    g = gt_person(0, nose=(100, 100), head_top=(100, 60))
    far = pred(1, score=0.99, nose=(900, 900), head_top=(900, 860))
    r = ap([[g]], [[far, pred(0, score=0.1, nose=(100, 100), head_top=(100, 60))]])
    assert nose(r) == pytest.approx(50.0)


def test_voc_ap_hand_computed():
    # ranks: TP 0.9, FP 0.8, TP 0.7, FP 0.6 with 4 GT -> 100 * (0.25 * 1 + 0.25 * 2/3)
    scores = np.array([[0.7], [0.9], [0.6], [0.8]])
    labels = np.array([[True], [True], [False], [False]])
    got, pre, rec = joint_ap(scores, np.ones_like(labels), labels, np.array([4]))
    assert got[0] == pytest.approx(100 * (0.25 + 0.25 * 2 / 3))
    assert pre[0] == pytest.approx(50.0) and rec[0] == pytest.approx(50.0)


def test_voc_ap_through_matching():
    # 4 GT noses in 2 frames; predictions TP 0.9, FP 0.8 (unmatched far one), TP 0.7
    f0 = [gt_person(0, nose=(100, 100), head_top=(100, 60)), gt_person(1, nose=(400, 100), head_top=(400, 60))]
    f1 = [gt_person(0, nose=(100, 100), head_top=(100, 60)), gt_person(1, nose=(400, 100), head_top=(400, 60))]
    p0 = [pred(0, 0.9, nose=(100, 100), head_top=(100, 60)), pred(1, 0.8, nose=(900, 900), head_top=(900, 860))]
    p1 = [pred(0, 0.7, nose=(401, 100), head_top=(400, 60))]
    r = ap([f0, f1], [p0, p1])
    assert nose(r) == pytest.approx(100 * (0.25 + 0.25 * 2 / 3))


# ---------------------------------------------------------------------------------------------
# §2 frame selection and ignore regions


def test_frames_without_gt_are_dropped_even_if_labeled():
    g = gt_person(0, nose=(100, 100), head_top=(100, 60))
    p = pred(0, 0.5, nose=(100, 100), head_top=(100, 60))
    spam = pred(5, 0.99, nose=(10, 10), head_top=(10, 5))
    r = ap([[g], []], [[p], [spam]], labeled=[True, True])  # frame 1 labeled, no GT: costs nothing
    assert nose(r) == pytest.approx(100.0)
    result = evaluate_json([video([[g], []], labeled=[True, True])], [video([[p], [spam]])])
    assert result.n_frames == 1


def test_gt_person_without_keypoints_stays_outside_ignore_frames():
    empty = gt_person(0)  # no keypoints at all: never matched, adds no GT
    g = gt_person(1, nose=(100, 100), head_top=(100, 60))
    r = ap([[empty, g]], [[pred(0, nose=(100, 100), head_top=(100, 60))]])
    assert nose(r) == pytest.approx(100.0)
    # a frame whose only GT person has no keypoints is kept: predictions there are FP
    r = ap([[g], [gt_person(0)]], [[pred(0, 0.5, nose=(100, 100), head_top=(100, 60))],
                                  [pred(0, 0.9, nose=(5, 5), head_top=(5, 1))]])
    assert nose(r) == pytest.approx(50.0)


SQUARE = [(0, 0), (200, 0), (200, 200), (0, 200)]


def test_ignore_region_strict_interior_removes_boundary_keeps():
    inside_gt = gt_person(0, nose=(50, 50), head_top=(300, 300))  # nose strictly inside the square
    r = ap([[inside_gt]], [[pred(0, nose=(50, 50), head_top=(300, 300))]], ignore={0: [SQUARE]})
    assert r["nose"] == 0.0 and r["head_top"] == pytest.approx(100.0)  # no GT nose, no pred nose
    on_edge = gt_person(0, nose=(200, 50), head_top=(300, 300))  # on the boundary: kept
    r = ap([[on_edge]], [[pred(0, nose=(200, 50), head_top=(300, 300))]], ignore={0: [SQUARE]})
    assert r["nose"] == pytest.approx(100.0)


def test_persons_left_without_keypoints_are_removed_in_ignore_frames():
    hidden = gt_person(0, nose=(50, 50), head_top=(60, 60))  # entirely inside: disappears
    visible = gt_person(1, nose=(400, 400), head_top=(400, 360))
    preds = [pred(0, 0.9, nose=(50, 50), head_top=(60, 60)), pred(1, 0.5, nose=(400, 400), head_top=(400, 360))]
    r = ap([[hidden, visible]], [preds], ignore={0: [SQUARE]})
    assert nose(r) == pytest.approx(100.0)  # the hidden pair is gone from both sides
    # a GT person with no keypoints at all is removed too in an ignore frame; if that empties the
    # frame, remaining predictions are false positives
    r = ap([[gt_person(0)], [visible]], [[pred(0, 0.9, nose=(400, 400), head_top=(400, 360))],
                                        [pred(1, 0.5, nose=(400, 400), head_top=(400, 360))]],
           ignore={0: [SQUARE]})
    assert nose(r) == pytest.approx(50.0)


def test_predictions_inside_ignore_regions_cost_nothing():
    g = gt_person(0, nose=(400, 400), head_top=(400, 360))
    junk = pred(1, 0.99, nose=(10, 10), head_top=(20, 20), left_hip=(30, 30))
    r = ap([[g]], [[junk, pred(0, 0.1, nose=(400, 400), head_top=(400, 360))]], ignore={0: [SQUARE]})
    assert nose(r) == pytest.approx(100.0) and r["left_hip"] == 0.0  # hip: no GT, no pred left


# ---------------------------------------------------------------------------------------------
# §4-§5 NaN rules and summary


def test_nan_joint_makes_group_nan_total_nanmean():
    g = gt_person(0, nose=(100, 100), head_top=(100, 60))
    p = pred(0, nose=(100, 100), head_top=(100, 60), head_bottom=(100, 80))
    result = evaluate_json([video([[g]])], [video([[p]])])
    assert math.isnan(result.per_joint["neck"]) and math.isnan(result.table["Head"])
    aps = [v for v in result.per_joint.values() if not math.isnan(v)]
    assert result.table["Total"] == pytest.approx(np.mean(aps))
    assert result.table["Total"] == pytest.approx(200 / 14)  # nose 100, head_top 100, 12 zeros
    assert result.to_json()["table"]["Head"] is None


def test_no_predictions_gives_zero_not_nan():
    result = evaluate_json([video([[gt_person(0, nose=(1, 1))]])], [video([[]])])
    assert all(v == 0.0 for v in result.per_joint.values()) and result.table["Total"] == 0.0


def test_no_labeled_frames_and_empty_everything():
    result = evaluate_json([video([[], []])], [video([[pred(0, nose=(5, 5))], []])])
    assert result.n_frames == 0 and result.table["Total"] == 0.0
    assert evaluate_json([], []).table["Total"] == 0.0


def test_all_joints_invisible_gt_only_false_positives():
    result = evaluate_json([video([[gt_person(0), gt_person(1)]])], [video([[pred(0, nose=(5, 5))]])])
    assert math.isnan(result.per_joint["nose"]) and result.per_joint["head_top"] == 0.0
    assert result.table["Total"] == 0.0  # nanmean over the 14 zero joints


# ---------------------------------------------------------------------------------------------
# §1 pairing, layout variants


def test_frames_pair_by_position_not_by_id():
    g = video([[gt_person(0, nose=(100, 100), head_top=(100, 60))], [gt_person(0, nose=(300, 300), head_top=(300, 260))]])
    p = video([[pred(0, nose=(100, 100), head_top=(100, 60))], [pred(0, nose=(300, 300), head_top=(300, 260))]])
    p["images"][0]["id"], p["images"][1]["id"] = 1001, 1000  # swap ids, keep the list order
    for a in p["annotations"]:
        a["image_id"] = 2001 - a["image_id"]
    assert evaluate_json([g], [p]).per_joint["nose"] == pytest.approx(100.0)


def test_only_the_first_video_of_a_file_is_evaluated():
    g = video([[gt_person(0, nose=(100, 100), head_top=(100, 60))], [gt_person(0, nose=(300, 300), head_top=(300, 260))]])
    p = video([[pred(0, nose=(100, 100), head_top=(100, 60))], [pred(0, nose=(9, 9), head_top=(9, 5))]])
    for doc in (g, p):
        doc["images"][1]["file_name"] = "images/val/000002_mpii_test/000000.jpg"  # a second video
    result = evaluate_json([g], [p])
    assert result.n_frames == 1 and result.per_joint["nose"] == pytest.approx(100.0)


def test_joints_map_by_category_name_not_slot():
    g = video([[gt_person(0, nose=(100, 100), head_top=(100, 60))]])
    p = video([[pred(0, nose=(100, 100), head_top=(100, 60))]])
    order = list(reversed(JOINT_NAMES))
    for a in p["annotations"]:  # rewrite the prediction with reversed slots and category names
        trip = np.array(a["keypoints"]).reshape(17, 3)[::-1]
        a["keypoints"], a["scores"] = trip.ravel().tolist(), a["scores"][::-1]
    p["categories"] = [{**CATS[0], "keypoints": order}]
    assert evaluate_json([g], [p]).per_joint["head_top"] == pytest.approx(100.0)
    p["categories"] = [{**CATS[0], "keypoints": ["left_eye" if n == "head_bottom" else n for n in order]}]
    with pytest.raises(PoseTrackEvalError, match="head_bottom"):
        evaluate_json([g], [p])


def test_posetrack17_annolist_predictions():
    g = video([[gt_person(0, nose=(100, 100), head_top=(100, 60))], []])
    point = lambda j, x, y, s: {"id": [j], "x": [x], "y": [y], "score": [s]}  # noqa: E731
    rect = {"track_id": [0], "annopoints": [{"point": [point(13, 100, 100, 0.9), point(14, 100, 60, 0.9)]}]}
    dummy = {"track_id": [0], "annopoints": [{"point": [point(0, 0, 0, -100)]}]}  # DCPose's empty-frame dummy
    p = {"annolist": [{"image": [{"name": "a/000001_mpii_test/000000.jpg"}], "annorect": [rect]},
                      {"image": [{"name": "a/000001_mpii_test/000001.jpg"}], "annorect": [dummy]}]}
    r = evaluate_json([g], [p]).per_joint
    assert r["nose"] == pytest.approx(100.0) and r["head_top"] == pytest.approx(100.0)
    # a rect without annopoints is dropped; a missing score falls back to -9999
    p["annolist"][0]["annorect"] = [{"track_id": [1]}, {"track_id": [0], "annopoints": [{"point": [
        {"id": [13], "x": [100], "y": [100]}]}]}]
    frames = read_frames(p, "p.json")
    assert len(frames[0].xy) == 1 and frames[0].score[0, 13] == -9999.0


def test_posetrack21_protocol_differences():
    g = gt_person(0, nose=(100, 100), head_top=(100, 60), left_hip=(-5, 50))  # hip at x<0: missing in PT21
    p = pred(0, nose=(100, 100), head_top=(100, 60), left_hip=(-5, 50))
    pt18 = ap([[g]], [[p]])
    pt21 = ap([[g]], [[p]], protocol="posetrack21")
    assert pt18["left_hip"] == pytest.approx(100.0) and pt21["left_hip"] == 0.0
    # a joint with predictions but no GT: NaN for PT18, 0 for PT21 (recall over max(nGT, 1))
    q = pred(0, nose=(100, 100), head_top=(100, 60), right_hip=(50, 50))
    assert math.isnan(ap([[g]], [[q]])["right_hip"])
    assert ap([[g]], [[q]], protocol="posetrack21")["right_hip"] == 0.0
    # frames are selected by is_labeled: an unlabeled frame with GT is skipped, a labeled one without
    # GT is kept and its predictions are false positives
    frames = [[g], [g], []]
    preds = [[pred(0, 0.5, nose=(100, 100), head_top=(100, 60))], [pred(0, 0.9, nose=(7, 7), head_top=(7, 3))],
             [pred(0, 0.8, nose=(9, 9), head_top=(9, 5))]]
    gt_doc, pred_doc = video(frames, labeled=[True, False, True]), video(preds)
    # PT18 keeps frames 0, 1 (GT present): FP 0.9, TP 0.5 over 2 GT noses -> 25
    assert evaluate_json([gt_doc], [pred_doc]).per_joint["nose"] == pytest.approx(25.0)
    pt21_nose = evaluate_json([gt_doc], [pred_doc], protocol="posetrack21").per_joint["nose"]
    assert pt21_nose == pytest.approx(50.0)  # frames 0, 2: FP 0.8 (labeled, no GT) above TP 0.5, 1 GT
    del gt_doc["images"][0]["is_labeled"]
    with pytest.raises(PoseTrackEvalError, match="is_labeled"):
        evaluate_json([gt_doc], [pred_doc], protocol="posetrack21")


def test_duplicate_track_ids_allowed_unless_strict():
    g = video([[gt_person(0, nose=(100, 100), head_top=(100, 60))]])
    p = video([[pred(3, 0.9, nose=(100, 100), head_top=(100, 60)), pred(3, 0.1, nose=(9, 9), head_top=(9, 5))]])
    assert evaluate_json([g], [p]).per_joint["nose"] == pytest.approx(100.0)
    with pytest.raises(PoseTrackEvalError, match="track_id"):
        evaluate_json([g], [p], strict=True)


def test_missing_head_box_is_a_clear_error_when_needed():
    g = video([[{"track_id": 0, "keypoints": kps(nose=(1, 1))}]])
    assert evaluate_json([g], [video([[]])]).per_joint["nose"] == 0.0  # no predictions: not needed
    with pytest.raises(PoseTrackEvalError, match="bbox_head"):
        evaluate_json([g], [video([[pred(0, nose=(1, 1))]])])


# ---------------------------------------------------------------------------------------------
# fast path == per-person reference on generated data


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("protocol", ["posetrack18", "posetrack21"])
def test_vectorised_matches_reference(seed, protocol):
    rng = np.random.default_rng(seed)
    pairs = []
    for v in range(4):
        gt, pr = make_video(rng, v + 1, 8, 4, hard=True)
        pairs += list(zip(read_frames(gt, "gt", protocol), read_frames(pr, "pr", protocol)))
    fast, slow = evaluate_frames(pairs, protocol), reference_evaluate(pairs, protocol)
    np.testing.assert_allclose(list(fast.per_joint.values()), list(slow.per_joint.values()), rtol=0, atol=1e-9)
    assert set(fast.per_joint) == set(POSEVAL_JOINTS)
