"""Fused trials on real smoke data: each fused row trains exactly as its own trial, resumes per row,
and a group over the memory budget, or rows that cannot share a backbone, are refused before any work."""

import dataclasses
from pathlib import Path

import pytest
import torch

from vremd.ablation.fused_loop import FusedRow, FusedTrainingError, fit_fused
from vremd.ablation.fusion import GIB, estimate_bytes, plan_fusion, plan_text
from vremd.ablation.grid import AblationError, build_grid, load_tables
from vremd.config import config_from_dict, smoke_config
from vremd.train.identity import run_identity
from vremd.train.ray_train import fit

ROOT = Path(__file__).resolve().parents[2]
TABLES = load_tables(ROOT / "experiments" / "ablations.yaml")


def frozen_smoke(frozen: bool = True, **train):
    cfg = smoke_config()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, freeze_backbone=frozen),
                               train=dataclasses.replace(cfg.train, **train))


@pytest.fixture(scope="module")
def smoke_paths(smoke_data):
    torch.set_num_threads(1)
    return smoke_data.run_paths()


def _rows(specs, paths, storage: Path, epochs: int | None = None) -> list[FusedRow]:
    rows = []
    for spec in specs:
        cfg = config_from_dict(spec.config)
        if epochs is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
        identity = run_identity(cfg, Path(paths.index_dir), Path(paths.gt_dir), threads=1).as_dict()
        rows.append(FusedRow(cfg, dataclasses.replace(paths, run_dir=str(storage / spec.run_name)), identity))
    return rows


def test_every_fused_row_trains_exactly_as_its_own_trial(smoke_paths, tmp_path):
    trials = build_grid(frozen_smoke(epochs=2, val_every=0), TABLES[4], seeds=1)
    plan = plan_fusion(trials, fuse=True, budget_bytes=GIB)
    assert [len(u) for u in plan.units] == [4]  # table 4's rows share the frozen backbone and the seed
    fused = fit_fused(_rows(trials, smoke_paths, tmp_path / "fused"))
    for spec, result in zip(trials, fused):
        alone = fit(config_from_dict(spec.config), smoke_paths, tmp_path / "alone", spec.run_name)
        assert [h["epoch"] for h in result.history] == [1, 2]
        for a, b in zip(alone.history, result.history):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-9), spec.row
            assert b["ap/mean"] == pytest.approx(a["ap/mean"], abs=1e-6) if "ap/mean" in a else "ap/mean" not in b
        for key, value in alone.state["model"].items():  # the checkpoint is the ordinary trial's
            assert torch.allclose(value, result.state["model"][key], rtol=1e-5, atol=1e-7), (spec.row, key)
        assert result.state["config"] == alone.state["config"] and result.state["identity"] == alone.state["identity"]
    losses = [r.history[-1]["loss"] for r in fused]
    assert len(set(losses)) == 4  # four different models, not one trained four times


def test_interrupted_fused_trial_resumes_each_row_from_its_own_checkpoint(smoke_paths, tmp_path):
    trials = build_grid(frozen_smoke(epochs=3, val_every=0), TABLES[6], seeds=1)[:2]
    straight = fit_fused(_rows(trials, smoke_paths, tmp_path / "straight"))
    storage = tmp_path / "interrupted"
    fit_fused(_rows(trials, smoke_paths, storage, epochs=1))  # both rows stopped after epoch 1
    fit_fused(_rows(trials[1:], smoke_paths, storage, epochs=2))  # the second row got one epoch further
    half = storage / trials[0].run_name / ".staging_checkpoint_epoch_0002_4242"
    half.mkdir()  # killed while publishing epoch 2's checkpoint (LocalCheckpointStore stages, then renames)
    (half / "state.pt").write_bytes(b"\0" * 10)  # half-written: never read
    resumed = fit_fused(_rows(trials, smoke_paths, storage))
    for a, b in zip(straight, resumed):
        assert [h["epoch"] for h in b.history] == [1, 2, 3]
        assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history], rel=1e-6)
    assert resumed[0].history[0]["samples_per_s"] != straight[0].history[0]["samples_per_s"]  # kept, not retrained


def test_groups_only_rows_that_share_a_frozen_backbone_and_refuses_over_budget(tmp_path):
    frozen = build_grid(frozen_smoke(), TABLES[6], seeds=2)
    plan = plan_fusion(frozen, fuse=True, budget_bytes=GIB)
    assert [[t.row for t in u] for u in plan.units] == [["DC", "DA", "DCA", "DCA+BS"]] * 2  # one per seed
    assert "fused trial 2 (seed 1" in plan_text(plan, {"cpu": 1.0})
    assert [len(u) for u in plan_fusion(frozen, fuse=False, budget_bytes=GIB).units] == [1] * 8
    trained = build_grid(frozen_smoke(frozen=False), TABLES[6], seeds=1)  # the backbone trains: every row alone
    assert [len(u) for u in plan_fusion(trained, fuse=True, budget_bytes=GIB).units] == [1] * 4
    ddp = build_grid(frozen_smoke(num_workers=2), TABLES[6], seeds=1)  # DDP batches: not one process's
    assert [len(u) for u in plan_fusion(ddp, fuse=True, budget_bytes=GIB).units] == [1] * 4
    need = estimate_bytes([t.config for t in frozen[:4]])
    assert need > estimate_bytes([frozen[0].config])  # each row adds its parameters and optimiser state
    with pytest.raises(AblationError, match=r"memory budget of .* DC, DA, DCA, DCA\+BS needs .*nothing was run"):
        plan_fusion(frozen, fuse=True, budget_bytes=need - 1)


def test_rows_that_cannot_share_a_backbone_pass_are_refused(smoke_paths, tmp_path):
    trials = build_grid(frozen_smoke(), TABLES[6], seeds=2)  # row-major: DC seed 0, DC seed 1, DA seed 0, ...
    with pytest.raises(FusedTrainingError, match="cannot share batches"):  # other seed: other batches
        fit_fused(_rows([trials[0], trials[1]], smoke_paths, tmp_path / "seeds"))
    deeper = _rows([trials[2]], smoke_paths, tmp_path / "depth")[0]
    deeper = dataclasses.replace(deeper, cfg=dataclasses.replace(
        deeper.cfg, model=dataclasses.replace(deeper.cfg.model, depth=2)))
    with pytest.raises(FusedTrainingError, match="backbone weights differ"):
        fit_fused([_rows([trials[0]], smoke_paths, tmp_path / "depth")[0], deeper])
