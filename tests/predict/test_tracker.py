"""The IoU tracker: ids survive crossings and short gaps; a vanished box ends its track."""

import numpy as np
from predict_fixtures import moving_boxes

from vremd.predict.tracker import pairwise_iou_xywh, track_boxes


def test_pairwise_iou_values():
    a = np.array([[0, 0, 10, 10], [100, 100, 5, 5]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [200, 200, 1, 1]])
    iou = pairwise_iou_xywh(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [50 / 150, 1.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])


def test_two_crossing_boxes_keep_their_ids():
    # A moves right, B moves left at a slightly different height: they overlap heavily mid-way
    boxes = moving_boxes(12, [(0, 0), (88, 6)], [(8, 0), (-8, 0)])
    ids = track_boxes(boxes)
    assert sorted(ids[0].tolist()) == [0, 1]
    for t in range(12):
        # the box that started on the left is always the one moving right
        left_starter = int(np.argmin(np.abs(boxes[t][:, 0] - 8 * t)))
        assert ids[t][left_starter] == ids[0][0], f"frame {t}: ids swapped {ids[t]}"
    # the input order swaps half-way through: ids must follow the boxes, not the order
    swapped = [b if t < 6 else b[::-1] for t, b in enumerate(boxes)]
    ids2 = track_boxes(swapped)
    assert list(ids2[11]) == list(ids[11][::-1])


def test_disappearing_box_ends_its_track_and_a_new_one_starts():
    boxes = moving_boxes(10, [(0, 0), (60, 0)], [(1, 0), (0, 1)])
    frames = [b if t < 3 else b[:1] for t, b in enumerate(boxes)]  # box 1 gone from frame 3
    frames[8] = boxes[8]  # ... and back after 5 frames: beyond max_gap=2, so a new id
    ids = track_boxes(frames, max_gap=2)
    assert ids[0].tolist() == [0, 1]
    assert all(ids[t].tolist() == [0] for t in range(3, 8))
    assert ids[8].tolist() == [0, 2]


def test_short_gap_keeps_the_id():
    boxes = moving_boxes(6, [(0, 0)], [(3, 0)])
    frames = [b if t != 2 else b[:0] for t, b in enumerate(boxes)]  # one missed detection
    ids = track_boxes(frames, max_gap=2)
    assert [i.tolist() for i in ids] == [[0], [0], [], [0], [0], [0]]


def test_empty_input_and_empty_frames():
    assert track_boxes([]) == []
    ids = track_boxes([np.zeros((0, 4)), np.array([[0, 0, 5, 5]]), np.zeros((0, 4))])
    assert [i.tolist() for i in ids] == [[], [0], []]
