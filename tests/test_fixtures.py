"""Tests run on any clone: fixtures live in tests/fixtures, nothing reads a path outside the repo, and a
glob over a missing fixture folder fails instead of collecting nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from poseval_fixtures import POSEVAL_REAL, fixture_files, poseval_real

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".json", ".lock"}
SKIPPED_DIRS = {".git", ".venv", "data", "models", "reports", "ray_results", "mlruns", "mlartifacts", "weights",
                "__pycache__", ".pytest_cache", ".dvc"}


def test_missing_or_empty_fixture_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: fixture folder is missing"):
        fixture_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: fixture folder is empty of"):
        fixture_files(tmp_path / "empty")


def test_poseval_real_fixture_is_inside_the_repo_and_complete():
    assert POSEVAL_REAL.is_relative_to(ROOT / "tests")
    names = ["003418_mpii_test.json", "009473_mpii_test.json", "012834_mpii_test.json"]
    for part in ("gt", "copy/pred", "perturbed/pred"):
        assert [p.name for p in fixture_files(poseval_real(*part.split("/")))] == names
    assert (POSEVAL_REAL / "SOURCE.md").is_file()
    assert (ROOT / "docs" / "poseval_spec.md").is_file()


def _repo_text_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIPPED_DIRS or "__pycache__" in rel.parts or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in ("Makefile", "dvc.yaml"):
            out.append(path)
    return out


def test_no_file_names_the_shared_reference_folder():
    shared = "/work/" + "shared"  # split so this file does not match itself
    offenders = [str(p.relative_to(ROOT)) for p in _repo_text_files() if shared in p.read_text(errors="replace")]
    assert len(_repo_text_files()) > 50
    assert offenders == []
