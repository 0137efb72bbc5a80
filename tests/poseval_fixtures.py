"""The real PoseTrack18 fixtures (tests/fixtures/poseval_real, see its SOURCE.md), found relative to this file.

A glob over a missing or emptied fixture folder raises instead of returning nothing, so a parametrized
test cannot collect zero cases and pass on a clone that lacks the files.
"""

from __future__ import annotations

from pathlib import Path

POSEVAL_REAL = Path(__file__).resolve().parent / "fixtures" / "poseval_real"


def fixture_files(folder: Path, pattern: str = "*.json") -> list[Path]:
    """`sorted(folder.glob(pattern))`; FileNotFoundError naming the folder when nothing matches."""
    files = sorted(folder.glob(pattern))
    if not files:
        state = "is empty of" if folder.is_dir() else "is missing, so it has no"
        raise FileNotFoundError(f"{folder}: fixture folder {state} {pattern} files")
    return files


def poseval_real(*parts: str) -> Path:
    """A folder under tests/fixtures/poseval_real holding json files, checked: e.g. poseval_real("gt")."""
    folder = POSEVAL_REAL.joinpath(*parts)
    fixture_files(folder, "**/*.json")
    return folder
