"""The 17 COCO-order keypoints PoseTrack18 annotates, their left/right pairs and skeleton edges."""

from __future__ import annotations

import numpy as np

# PoseTrack18 keeps COCO's 17 slots but names slots 1 and 2 head_bottom and head_top
# (COCO's left_eye / right_eye); the official poseval maps keypoints by these names.
JOINT_NAMES: tuple[str, ...] = (
    "nose", "head_bottom", "head_top", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_JOINTS = len(JOINT_NAMES)

# The slots PoseTrack17/18/21 annotate and poseval scores (15): every slot but the ears, which PoseTrack
# leaves at (0, 0, 0). The model's keypoint tokens and heatmap heads cover these joints only.
UNANNOTATED_JOINTS: tuple[int, ...] = (JOINT_NAMES.index("left_ear"), JOINT_NAMES.index("right_ear"))
ANNOTATED_JOINTS: tuple[int, ...] = tuple(j for j in range(NUM_JOINTS) if j not in UNANNOTATED_JOINTS)

# (left, right) slot pairs swapped by a horizontal flip
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# slot order after a horizontal flip: FLIP_INDEX[j] is the slot whose value moves to j
FLIP_INDEX: tuple[int, ...] = tuple(
    next((b if j == a else a for a, b in FLIP_PAIRS if j in (a, b)), j) for j in range(NUM_JOINTS)
)

# PoseTrack18's skeleton (1-based in the json `categories`; 0-based here)
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 5), (1, 6),
)

UPPER_BODY: tuple[int, ...] = tuple(range(0, 11))
LOWER_BODY: tuple[int, ...] = tuple(range(11, 17))


def annotated_joints(keypoints_xyv: np.ndarray) -> np.ndarray:
    """(..., J) bool of (..., J, 3) keypoints: the joints poseval scores, every (x, y, v) but (0, 0, 0),
    whatever v says (a v=0 joint with coordinates is annotated for poseval)."""
    return np.any(np.asarray(keypoints_xyv) != 0, axis=-1)
