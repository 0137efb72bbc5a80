"""Security: weights-only checkpoint loading everywhere, malicious pickles refused, unsafe archives
refused, the MLflow UI bound to localhost.

Covered elsewhere (referenced in docs/reliability.md, not duplicated here): zip-slip, tar traversal,
outward symlinks and hard links, devices (tests/data/sources/test_archives.py); sha256 verification of
downloaded archives (tests/data/sources/test_download.py::test_wrong_checksum_*).
"""

from __future__ import annotations

import ast
import os
import re
import tarfile
from pathlib import Path

import pytest
import torch

from tests.data.sources.test_archives import write_tar
from vremd.data.sources.archives import ArchiveError, extract_archive
from vremd.model.checkpoint import CheckpointError, load_trained
from vremd.train.checkpoints import load_state

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("vremd", "pipeline", "benchmarks", "tests", "experiments")


def _python_files() -> list[Path]:
    return sorted(p for d in SCANNED if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py"))


def _is_torch_load(call: ast.Call, load_aliases: set[str]) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) and f.value.id == "torch":
        return True
    return isinstance(f, ast.Name) and f.id in load_aliases


def test_every_torch_load_passes_weights_only_true():
    calls, bad = 0, []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module in ("torch", "torch.serialization") for a in node.names if a.name == "load"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _is_torch_load(node, aliases):
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                deliberate = "deliberately unsafe" in path.read_text(encoding="utf-8").splitlines()[node.lineno - 1]
                if not ok and not deliberate:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls >= 4, "the scan found too few torch.load calls: is it looking in the right place?"
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_pickle_or_unsafe_yaml_loading_in_the_library():
    pattern = re.compile(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|yaml\.(unsafe_)?load\(|yaml\.Loader\b")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in _python_files() if p.parts[len(REPO.parts)] != "tests"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"unsafe deserialisation: {hits}"


class _Payload:
    """A pickle that runs a shell command when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path, wrap: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"model": {"w": torch.zeros(2)}, "config": {}, "extra": _Payload(marker)} if wrap else _Payload(marker)
    torch.save(obj, path)
    return path


def test_malicious_pickle_is_not_executed_by_a_plain_load(tmp_path):
    """Sanity check of the payload itself: an unsafe load does run it, so the tests below mean something."""
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "evil.pt", marker, wrap=False)
    torch.load(tmp_path / "evil.pt", weights_only=False)  # deliberately unsafe: proves the payload works
    assert marker.exists()


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "inside-a-state-dict"])
def test_training_checkpoint_loader_refuses_malicious_pickle(tmp_path, wrap):
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "ckpt" / "state.pt", marker, wrap)
    with pytest.raises(CheckpointError, match="state.pt: unreadable checkpoint"):
        load_state(tmp_path / "ckpt")
    assert not marker.exists()


def test_predict_loader_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "final.pt", marker, wrap=True)
    with pytest.raises(CheckpointError, match="final.pt: unreadable checkpoint"):
        load_trained(path)
    assert not marker.exists()


def test_vitpose_loader_refuses_malicious_pickle(tmp_path):
    from vremd.model.backbone import ViTBackbone, load_vitpose_checkpoint

    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "vitpose.pth", marker, wrap=True)
    backbone = ViTBackbone((64, 48), patch_size=16, embed_dim=32, depth=1, num_heads=2, frozen=True)
    with pytest.raises(Exception) as err:
        load_vitpose_checkpoint(backbone, path)
    assert not marker.exists()
    assert "vitpose.pth" in str(err.value), f"error does not name the file: {err.value}"


def test_evaluate_stage_refuses_malicious_model_with_a_clear_error(tmp_path, capsys):
    from pipeline import evaluate

    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / "models" / "final.pt", marker, wrap=True)
    rc = evaluate.main(["--params", str(REPO / "params.yaml"), "--model", str(path), "--index", str(tmp_path / "index"),
                        "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "reports"),
                        "--metrics", str(tmp_path / "ap.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert rc == 1 and "final.pt" in err and "Traceback" not in err


# ------------------------------------------------------------------ archives: cases beyond test_archives.py


def _member(name: str, data: bytes | None = None, link: str | None = None, kind: bytes = tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = kind, link
    return info, data


@pytest.mark.parametrize("members,needle", [
    ([_member("ok.txt", b"x"), _member("d/h", link="/etc/passwd", kind=tarfile.LNKTYPE)], "hard link"),
    ([_member("ok.txt", b"x"), _member("d/h", link="d/../../up", kind=tarfile.LNKTYPE)], "hard link"),
    ([_member("d", link="..", kind=tarfile.SYMTYPE), _member("d/evil.txt", b"x")], "symlink"),
    ([_member("d/e", link="../../etc", kind=tarfile.SYMTYPE)], "symlink"),
], ids=["hardlink-absolute", "hardlink-dotdot-inside-name", "symlinked-dir-then-write-through", "symlink-up-two"])
def test_more_unsafe_tar_links_are_refused(tmp_path, members, needle):
    archive = write_tar(tmp_path / "bad.tar", members, mode="w")
    with pytest.raises(ArchiveError, match=needle):
        extract_archive(archive, tmp_path / "x" / "out")
    assert not (tmp_path / "x" / "out").exists() and not (tmp_path / "x" / "evil.txt").exists()


def test_in_tree_hard_link_extracts(tmp_path):
    archive = write_tar(tmp_path / "ok.tar", [_member("a/real.txt", b"data"),
                                              _member("b/alias.txt", link="a/real.txt", kind=tarfile.LNKTYPE)], mode="w")
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out/b/alias.txt").read_bytes() == b"data"


# ------------------------------------------------------------------ MLflow UI binding


def test_mlflow_ui_is_bound_to_localhost():
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^mlflow-ui:.*?(?=^\S|\Z)", makefile, re.S | re.M)
    assert target and "--host 127.0.0.1" in target.group(0)
    doc = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert "127.0.0.1" in doc and "mlflow ui" in doc
