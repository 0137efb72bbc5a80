"""Each fact is written once in vremd/ and pipeline/: a second copy of a constant fails here, naming both places.

The owners: the frame axis in vremd/frames.py; PoseTrack's splits, track ids and video-folder pattern in
vremd/data/posetrack.py; PCKh and the AP vocabulary in vremd/eval/posetrack_ap.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from vremd.eval.posetrack_ap import AP_CURVE_COLUMNS, COLUMNS, GROUPS, MEAN, METRIC_NAMES, TABLE_KEYS, TOTAL, as_columns

ROOT = Path(__file__).resolve().parents[1]
# module-level names that are defined once, and where
OWNED_NAMES = {
    "PREV": "vremd/frames.py", "KEY": "vremd/frames.py", "NEXT": "vremd/frames.py", "NUM_FRAMES": "vremd/frames.py",
    "FRAME_OFFSETS": "vremd/frames.py", "FRAME_NAMES": "vremd/frames.py",
    "SPLITS": "vremd/data/posetrack.py", "MAX_TRACK_ID": "vremd/data/posetrack.py",
    "PCKH_THRESHOLD": "vremd/eval/posetrack_ap.py", "HEAD_SIZE_FACTOR": "vremd/eval/posetrack_ap.py",
    "COLUMNS": "vremd/eval/posetrack_ap.py", "METRIC_NAMES": "vremd/eval/posetrack_ap.py",
    "AP_METRIC_NAMES": None, "COLUMN_METRICS": None,  # the old copies of METRIC_NAMES
}
VIDEO_FOLDER_REGEX = re.compile(r"\((\?:)?mpii\|bonn\|mpiinew\)")  # the sequence kinds as a regex group


def _trees() -> dict[str, ast.Module]:
    paths = sorted([*(ROOT / "vremd").rglob("*.py"), *(ROOT / "pipeline").rglob("*.py")])
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(), filename=str(p)) for p in paths}


TREES = _trees()


def _where(found: list[tuple[str, int]]) -> str:
    return ", ".join(f"{path}:{line}" for path, line in found) or "nowhere"


def _module_assignments(tree: ast.Module) -> list[tuple[str, int]]:
    names = []
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.append((leaf.id, node.lineno))
    return names


def _constants(predicate) -> list[tuple[str, int]]:
    return [(path, node.lineno) for path, tree in TREES.items() for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and predicate(node.value)]


@pytest.mark.parametrize("name", sorted(OWNED_NAMES))
def test_constant_defined_once(name):
    found = [(path, line) for path, tree in TREES.items() for n, line in _module_assignments(tree) if n == name]
    owner = OWNED_NAMES[name]
    expected = [owner] if owner else []
    assert [path for path, _ in found] == expected, f"{name} is defined at {_where(found)}; only {owner} may"


def test_mean_metric_name_written_once():
    found = _constants(lambda v: v == "ap/mean")
    assert [p for p, _ in found] == ["vremd/eval/posetrack_ap.py"], (
        f'"ap/mean" is written at {_where(found)}: import MEAN_METRIC from vremd.eval.posetrack_ap')


def test_head_size_factor_written_once():
    found = [(path, node.lineno) for path, tree in TREES.items() for node in ast.walk(tree)
             if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
             and any(isinstance(s, ast.Constant) and s.value == 0.6 for s in (node.left, node.right))]
    assert not found, f"0.6 * ... at {_where(found)}: use vremd.eval.posetrack_ap.head_size (HEAD_SIZE_FACTOR)"


def test_video_folder_pattern_written_once():
    found = _constants(lambda v: isinstance(v, str) and VIDEO_FOLDER_REGEX.search(v))
    assert [p for p, _ in found] == ["vremd/data/posetrack.py"], (
        f"the mpii|bonn|mpiinew pattern is written at {_where(found)}: use vremd.data.posetrack.VIDEO_FOLDER")


@pytest.mark.parametrize("literal", [(-1, 0, 1), ("t-1", "t", "t+1"), ("train", "val")])
def test_tuple_literal_written_once(literal):
    found = []
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple):
                try:
                    value = ast.literal_eval(node)
                except ValueError:
                    continue
                if value == literal:
                    found.append((path, node.lineno))
    assert len(found) == 1, f"{literal} is written at {_where(found)}: import the owner's constant"


def test_ap_vocabulary_lines_up():
    assert TABLE_KEYS == (*GROUPS, TOTAL) and COLUMNS == (*GROUPS, MEAN) and tuple(METRIC_NAMES) == COLUMNS
    assert AP_CURVE_COLUMNS == ("ap_mean", "ap_head", "ap_shoulder", "ap_elbow", "ap_wrist", "ap_hip", "ap_knee",
                                "ap_ankle")
    table = {k: float(i) for i, k in enumerate(TABLE_KEYS)}
    assert list(as_columns(table)) == list(COLUMNS) and as_columns(table)[MEAN] == table[TOTAL]
    assert as_columns({TOTAL: 1.0, MEAN: 2.0}) == {TOTAL: 1.0, MEAN: 2.0} and as_columns(None) == {}
