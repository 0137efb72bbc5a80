"""benchmarks/gpu.py and gpu.sh on CPU: MFU arithmetic against a known FLOP count, argument handling, the
JSON schema, and the whole script end to end at tiny sizes (`--device cpu --tiny`), so the first run on a
GPU meets code that has already run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import gpu
from vremd.ablation.cost import module_flops

REPO = Path(__file__).resolve().parents[2]


def test_mfu_of_a_linear_layer_from_its_known_flop_count():
    layer = nn.Linear(64, 32)
    total, _ = module_flops(layer, torch.zeros(8, 64))
    assert total == 2 * 8 * 64 * 32  # one multiply-add per weight per row
    # 32,768 FLOPs per item at 1e6 items/s is 32.8 TFLOP/s: 3.3% of a 989 TFLOP/s peak
    assert gpu.mfu(total, 1e6, 989.0) == pytest.approx(32768e6 / 989e12, rel=1e-12)
    assert gpu.mfu(1e12, 100.0, 1000.0) == pytest.approx(0.1)
    assert gpu.mfu(total, 1e6, None) is None
    with pytest.raises(ValueError):
        gpu.mfu(total, 1e6, 0.0)


def test_peak_is_known_for_hopper_names_only():
    assert gpu.peak_tflops_for("NVIDIA H200") == gpu.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops_for("CPU x86_64") is None


@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu"], "--tiny"),
    (["--device", "cpu", "--tiny", "--only", "vit_forward,warp_drive"], "unknown"),
    (["--device", "cpu", "--tiny", "--peak-tflops", "-1"], "positive"),
])
def test_bad_arguments_are_refused(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        gpu.main(argv + ["--out", str(tmp_path / "g.json")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_sh_refuses_clearly_without_a_gpu(tmp_path):
    out = subprocess.run(["bash", "benchmarks/gpu.sh", str(tmp_path / "g.json")], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env=os.environ | {"PATH": f"{REPO}/.venv/bin:{os.environ['PATH']}"})
    assert out.returncode == 2 and "no CUDA device" in out.stderr
    assert not (tmp_path / "g.json").exists()


def _report(**changes) -> dict:
    doc = {"schema": gpu.SCHEMA, "device": "cuda", "device_name": "NVIDIA H200", "tiny": False, "figures": {},
           "complete": False, "seconds": 1.0, "lock_sha256": "0" * 64, "torch": "2.14.1"}
    return doc | changes


def test_the_report_schema_is_checked():
    gpu.validate_report(_report())
    for bad, message in ((_report(schema="v0"), "schema"), (_report(seconds="1"), "seconds"),
                         (_report(figures={"fps": {}}), "unknown figures"),
                         (_report(complete=True, figures={"dca": {}}), "missing")):
        with pytest.raises(ValueError, match=message):
            gpu.validate_report(bad)


def test_two_figures_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "g.json"
    assert gpu.main(["--device", "cpu", "--tiny", "--only", "vit_forward,dca", "--peak-tflops", "2",
                     "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    gpu.validate_report(doc)
    vit = doc["figures"]["vit_forward"]
    assert not doc["complete"] and set(doc["figures"]) == {"vit_forward", "dca"}
    assert vit["mfu"] == pytest.approx(vit["flops_per_crop"] * vit["crops_per_s"] / 2e12)
    assert vit["crops_per_s"] == pytest.approx(vit["batch"] / vit["median_s"])
    assert doc["figures"]["dca"]["dca_cost_multiple"] > 0


@pytest.mark.slow
def test_every_figure_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "g.json"
    assert gpu.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    gpu.validate_report(doc)
    assert doc["complete"] and doc["peak_bf16_tflops"] is None
    f = doc["figures"]
    assert f["train_step"]["samples_per_s"] > 0 and f["train_step"]["mfu"] is None
    assert f["predict"]["persons"] > 0 and f["predict"]["batching_factor"] > 0
    assert f["determinism"]["on_samples_per_s"] > 0 and isinstance(f["determinism"]["nondeterministic_ops"], list)
    assert all("error" not in v for v in f.values())
