"""Stage `weights`: fetch (HTTP or local), verify (full sha256 or OpenMMLab's 8-digit prefix), install at
`model.pretrained`, validate against the profile's backbone size, and record a manifest."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from pipeline import weights
from tests.model.test_backbone import DEPTH, DIM, HEADS, vitpose_state_dict
from tests.model.test_checkpoint_layouts import mmpose_checkpoint
from vremd.model.checkpoint_layouts import MMPRETRAIN

# the smoke profile's backbone at the test checkpoints' size (64x48 input: a 4x3 token grid)
SIZE = {"model__embed_dim": DIM, "model__depth": DEPTH, "model__num_heads": HEADS}


def _checkpoint(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "td-hm_ViTPose-tiny_coco-64x48-abcdef12_20230314.pth"
    path.parent.mkdir(parents=True)
    torch.save(mmpose_checkpoint(vitpose_state_dict(seed=5)), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_stage(write_params, tmp_path):
    """`run_stage(**dotted) -> (exit code, manifest path)`: the stage on the smoke profile at SIZE in tmp_path."""

    def run(**dotted) -> tuple[int, Path]:
        params = write_params(tmp_path, **SIZE, **dotted)
        manifest = tmp_path / "weights" / "manifest.json"
        argv = ["--params", str(params), "--manifest", str(manifest), "--cache", str(tmp_path / "cache"),
                "--no-progress"]
        return weights.main(argv), manifest

    return run


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/src; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "src"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_over_http_checks_the_sha256_prefix_and_installs(run_stage, tmp_path, served):
    src, digest = _checkpoint(tmp_path)
    dest = tmp_path / "weights" / "vitpose.pth"
    rc, manifest = run_stage(model__pretrained=str(dest), model__pretrained_url=f"{served}/{src.name}",
                             model__pretrained_sha256=digest[:8])
    assert rc == 0
    assert dest.read_bytes() == src.read_bytes()
    record = json.loads(manifest.read_text())
    assert record["sha256"] == digest and record["layout"] == MMPRETRAIN and record["bytes"] == src.stat().st_size
    assert record["embed_dim"] == DIM and record["depth"] == DEPTH
    stamp = dest.stat().st_mtime_ns
    assert run_stage(model__pretrained=str(dest), model__pretrained_url=f"{served}/{src.name}",
                     model__pretrained_sha256=digest)[0] == 0  # cached download, full digest: nothing rewritten
    assert dest.stat().st_mtime_ns == stamp


def test_a_wrong_digest_is_refused_and_nothing_is_installed(run_stage, tmp_path, capsys):
    src, digest = _checkpoint(tmp_path)
    dest = tmp_path / "weights" / "vitpose.pth"
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    rc, manifest = run_stage(model__pretrained=str(dest), model__pretrained_url=str(src),
                             model__pretrained_sha256=wrong)
    assert rc == 1
    err = capsys.readouterr().err
    assert f"does not start with model.pretrained_sha256 {wrong}" in err and src.name in err
    assert not dest.exists() and not manifest.exists()
    assert run_stage(model__pretrained=str(dest), model__pretrained_url=str(src),
                     model__pretrained_sha256="53609f")[0] == 1  # too short to be a checked prefix
    assert "prefix of at least 8 hex digits" in capsys.readouterr().err


def test_a_checkpoint_of_another_size_fails_here_naming_both_sizes(write_params, tmp_path, capsys):
    src, _ = _checkpoint(tmp_path)
    params = {**SIZE, "model__embed_dim": 2 * DIM, "model__num_heads": HEADS}
    path = write_params(tmp_path, **params, model__pretrained=str(src))
    rc = weights.main(["--params", str(path), "--manifest", str(tmp_path / "m.json"), "--cache",
                       str(tmp_path / "cache"), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"width {DIM} and depth {DEPTH}" in err and f"width {2 * DIM} and depth {DEPTH}" in err


def test_a_file_placed_by_hand_is_verified_and_recorded(run_stage, tmp_path, capsys):
    src, digest = _checkpoint(tmp_path)
    rc, manifest = run_stage(model__pretrained=str(src))
    assert rc == 0
    assert json.loads(manifest.read_text())["sha256"] == digest
    assert "no model.pretrained_sha256 given" in capsys.readouterr().out


def test_no_pretrained_backbone_writes_a_manifest_saying_so(run_stage, tmp_path):
    rc, manifest = run_stage()
    assert rc == 0
    assert json.loads(manifest.read_text())["pretrained"] is None
