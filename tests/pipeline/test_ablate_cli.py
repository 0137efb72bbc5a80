"""`pipeline/ablate.py`: real Tune trials on real smoke data, MLflow parent/nested runs, restore, dry run."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import ray
import torch
import yaml
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

import pipeline.ablate as ablate
import pipeline.results_page as results_page
from vremd.config import smoke_config
from vremd.model.vremd import build_model
from vremd.ablation.trials import ATTEMPTS_FILE
from vremd.ablation.grid import build_grid, data_dirs, identities, load_tables
from vremd.train.tracking import lock_sha256

ROOT = Path(__file__).resolve().parents[2]
AP_NAMES = {"ap/head", "ap/shoulder", "ap/elbow", "ap/wrist", "ap/hip", "ap/knee", "ap/ankle", "ap/mean", "loss"}


def cli_args(data: Path, work: Path, *extra: str) -> list[str]:
    return ["--profile", "smoke", "--index", str(data / "index"), "--raw", str(data / "raw"),
            "--storage", str(work / "ray_results"), "--out", str(work / "results"),
            "--set", f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", *extra]


def nested_runs(work: Path, parent_id: str):
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return client, parent, {r.data.tags["ablation.row"]: r for r in children}


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_table6_smoke_runs_four_trials_and_reports_beside_the_paper(smoke_data, local_ray, tmp_path, capsys):
    rc = ablate.main(["--table", "6", "--seeds", "1", *cli_args(smoke_data.root, tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = out[out.index("Table 6: motion attention"):]
    assert "fused trial 1 (seed 0, one backbone pass per batch" in out  # the smoke backbone is frozen
    experiment = tmp_path / "ray_results" / "table6-smoke"
    assert [p.name.split("-")[0] for p in experiment.iterdir() if p.is_dir()] == ["fused4"]  # one Tune trial
    for row, paper in (("DC", "84.7"), ("DA", "85.8"), ("DCA", "87.1"), ("DCA+BS", "87.6")):
        line = next(line for line in table.splitlines() if line.startswith(row + " "))
        assert paper in line and line.rstrip().endswith("1/1"), line

    results = tmp_path / "results" / "table6"
    rows = list(csv.DictReader((results / "table6.csv").open()))
    means = {r["row"]: r for r in rows if r["column"] == "Mean"}
    assert set(means) == {"DC", "DA", "DCA", "DCA+BS"} and all(r["state"] == "ok" for r in means.values())
    assert all(0.0 <= float(r["ours"]) <= 100.0 and r["seeds"] == "1" for r in means.values())
    assert float(means["DC"]["delta"]) == pytest.approx(float(means["DC"]["ours"]) - 84.7)
    for png in ("table6.png", "table6_joints.png"):
        assert imread(results / png).shape[0] > 100
    assert "| DCA+BS | 87.6 |" in (results / "table6.md").read_text()
    trials = list(csv.DictReader((results / "trials.csv").open()))  # each row says where its fused trial ran
    assert [t["node_id"] for t in trials] == [ray.get_runtime_context().get_node_id()] * 4

    saved = json.loads((results / "results.json").read_text())
    client, parent, children = nested_runs(tmp_path, saved["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["ablation.table"] == "6"
    assert {"DC/ap/mean", "DCA-BS/ap/mean"} <= set(parent.data.metrics)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")} >= {
        "ablation/table6.md", "ablation/table6.csv", "ablation/table6.html", "ablation/table6.png",
        "ablation/table6_paired.csv", "ablation/table6_seeds.png"}
    # one seed: every row against DC says so, in the terminal, results.json and the parent run's tags
    assert "Against DC: row - reference in AP points" in out and "At 1 paired seed no difference" in out
    assert saved["reference"] == "DC" and {d["verdict"] for d in saved["paired"]} == {"too few seeds"}
    assert parent.data.tags["ablation.reference"] == "DC" and parent.data.tags["paired.DA.verdict"] == "too few seeds"
    for trial in saved["trials"]:  # where each run was made, as the results page shows it
        made = trial["provenance"]
        assert made["lock_sha256"] == lock_sha256(ROOT) and made["git_commit"] and made["cpu_model"]
        assert made["torch_cpu_capability"] and int(made["torch_threads"]) >= 1 and float(made["wall_s"]) > 0
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text("<!-- generated: table 6 -->\n<!-- end of generated table 6 -->\nDA: <!-- cite 6/DA/Mean/verdict -->"
                    "<!-- /cite -->\n")
    assert results_page.main(["--page", str(page), "--results", str(tmp_path / "results")]) == 0
    assert results_page.main(["--page", str(page), "--results", str(tmp_path / "results"), "--check"]) == 0
    assert "DA: <!-- cite 6/DA/Mean/verdict -->too few seeds<!-- /cite -->" in page.read_text()
    assert set(children) == {"DC", "DA", "DCA", "DCA+BS"}
    for row, run in children.items():
        assert run.info.status == "FINISHED"
        assert AP_NAMES <= set(run.data.metrics), run.data.metrics
        assert run.data.params["model.motion_attention"] == row.split("+")[0].lower()
        assert run.data.params["model.bidirectional_separation"] == str(row == "DCA+BS")
        assert run.data.metrics["ap/mean"] == pytest.approx(float(means[row]["ours"]))

    # Unfused, the same rows are the same trainings: the restored experiment refuses the other grouping, and a
    # fresh one finds every row's training finished in its folder and trains nothing.
    unfused = ["--table", "6", "--seeds", "1", "--no-fuse", *cli_args(smoke_data.root, tmp_path)]
    assert ablate.main(unfused) == 1
    assert "another grid (the fused groups" in capsys.readouterr().err
    states = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray_results" / "table6-smoke-runs").glob("*/*/state.pt")}
    assert len(states) == 4
    assert ablate.main([*unfused, "--fresh"]) == 0
    assert "fused trial" not in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in states} == states
    again = {r["row"]: r for r in csv.DictReader((results / "table6.csv").open()) if r["column"] == "Mean"}
    assert {r: again[r]["ours"] for r in again} == {r: means[r]["ours"] for r in means}

    # Table 4's VREMD row is table 6's DCA+BS (the full model): it takes that finished training, no retraining.
    ablations = tmp_path / "ablations.yaml"
    ablations.write_text(yaml.safe_dump({"tables": {4: {"title": "Table 4 (shared row)", "rows": {
        "VREMD": {"model.hkme": True, "model.bmd": True}}}}}))
    assert ablate.main(["--table", "4", "--ablations", str(ablations), *cli_args(smoke_data.root, tmp_path)]) == 0
    assert "VREMD " in capsys.readouterr().out
    runs = tmp_path / "ray_results"
    (twin,) = (runs / "table6-smoke-runs").glob("DCA-BS-seed0-*")
    (own,) = (runs / "table4-smoke-runs").glob("VREMD-seed0-*")
    assert own.name.split("-", 1)[1] == twin.name.split("-", 2)[2]  # same training id, other row name
    (ckpt,) = own.glob("checkpoint_*")
    twin_state = twin / ckpt.name / "state.pt"
    assert (ckpt / "state.pt").stat().st_ino == twin_state.stat().st_ino  # a hard link, not a retraining
    saved4 = json.loads((tmp_path / "results" / "table4" / "results.json").read_text())
    _, _, children4 = nested_runs(tmp_path, saved4["mlflow_parent_run_id"])
    adopted = children4["VREMD"]
    assert adopted.info.status == "FINISHED" and adopted.info.run_id != children["DCA+BS"].info.run_id
    assert adopted.data.tags["ablation.adopted_training"] == str(twin)
    assert adopted.data.metrics["ap/mean"] == pytest.approx(children["DCA+BS"].data.metrics["ap/mean"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = lambda run: [m.step for m in client.get_metric_history(run.info.run_id, "loss")]  # noqa: E731
    assert steps(adopted) == steps(children["DCA+BS"]) == list(range(1, smoke_config().train.epochs + 1))


def write_vitpose_checkpoint(path: Path) -> None:
    """The smoke backbone's weights in the official ViTPose .pth layout (what model.pretrained reads)."""
    vit = build_model(dataclasses.replace(smoke_config().model, pretrained="")).backbone.vit.state_dict()
    sd = {}
    for key, value in vit.items():
        if key == "pos_embed":  # ViTPose keeps a class slot first; zero adds nothing on conversion
            sd["backbone.pos_embed"] = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
        elif key.startswith("norm."):
            sd["backbone.last_norm." + key[len("norm."):]] = value
        else:
            sd["backbone." + key] = value
    torch.save({"state_dict": sd}, path)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_rerun_restores_and_runs_only_the_failed_trial(smoke_data, local_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the row names its weights relative to here; trials run in other folders
    weights = tmp_path / "weights" / "vitpose-smoke.pth"
    ablations = tmp_path / "ablations.yaml"
    ablations.write_text(yaml.safe_dump({"tables": {6: {"title": "Table 6 (restore test)", "rows": {
        "DCA": {"model.motion_attention": "dca", "model.bidirectional_separation": False},
        "DCA+BS": {"model.motion_attention": "dca", "model.bidirectional_separation": True,
                   "model.pretrained": "weights/vitpose-smoke.pth"}}}}}))
    args = ["--table", "6", "--ablations", str(ablations), "--max-failures", "0", *cli_args(smoke_data.root, tmp_path)]
    assert ablate.main(args) == 1  # missing weights: refused before any trial trains
    assert f"model.pretrained: no such weights file: {weights}; nothing was run" in capsys.readouterr().err
    assert not (tmp_path / "ray_results").exists()

    weights.parent.mkdir()
    write_vitpose_checkpoint(weights)
    grid = build_grid(smoke_config(), load_tables(ablations)[6], 1,  # the run names ablate.py will use
                      identity_of=identities(data_dirs(str(smoke_data.index), str(smoke_data.raw)),
                                             lambda cfg: 1))  # trial cpu=1
    blocked = tmp_path / "ray_results" / "table6-smoke-runs" / grid[1].run_name / "checkpoint_epoch_0001"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a checkpoint")  # a transient fault inside the DCA+BS trial's training: epoch 1 cannot
    # be published over it (a folder without its state file is never resumed from: checkpoints.latest_checkpoint)
    assert ablate.main(args) == 1  # one trial failed: the table says so and the exit code too
    captured = capsys.readouterr()
    assert "did not finish; run the same command again" in captured.err
    line = next(line for line in captured.out.splitlines() if line.startswith("DCA+BS "))
    assert "failed" in line and "0/1 (1 failed)" in line
    assert "cannot publish checkpoint" in captured.out
    trials = {t["row"]: t for t in csv.DictReader((tmp_path / "results" / "table6" / "trials.csv").open())}
    assert trials["DCA"]["status"] == "finished" and trials["DCA+BS"]["status"] == "failed"
    assert "cannot publish checkpoint" in trials["DCA+BS"]["error"] and trials["DCA+BS"]["run_name"] == grid[1].run_name
    runs = tmp_path / "ray_results" / "table6-smoke-runs"
    finished_ckpt = next((runs / trials["DCA"]["run_name"]).glob("checkpoint_*/*"))
    stamp = finished_ckpt.stat().st_mtime_ns
    parent_id = json.loads((tmp_path / "results" / "table6" / "results.json").read_text())["mlflow_parent_run_id"]
    _, parent, children = nested_runs(tmp_path, parent_id)
    assert parent.info.status == "FAILED" and children["DCA+BS"].info.status == "FAILED"

    blocked.unlink()  # the fault is gone
    assert ablate.main(args) == 0
    out = capsys.readouterr().out
    assert "(restored)" in out and "DCA+BS " in out
    attempts = {row: len((runs / trials[row]["run_name"] / ATTEMPTS_FILE).read_text().splitlines())
                for row in ("DCA", "DCA+BS")}
    assert attempts == {"DCA": 1, "DCA+BS": 2}  # only the failed trial ran again
    assert finished_ckpt.stat().st_mtime_ns == stamp
    trials = {t["row"]: t for t in csv.DictReader((tmp_path / "results" / "table6" / "trials.csv").open())}
    assert trials["DCA"]["status"] == trials["DCA+BS"]["status"] == "finished"
    _, parent, after = nested_runs(tmp_path, parent_id)  # same parent, same nested runs, now finished
    assert parent.info.status == "FINISHED"
    assert {r: run.info.run_id for r, run in after.items()} == {r: run.info.run_id for r, run in children.items()}
    assert after["DCA+BS"].info.status == "FINISHED" and AP_NAMES <= set(after["DCA+BS"].data.metrics)

    assert ablate.main([*args, "--set", "train.epochs=2"]) == 1  # another grid is never silently mixed in
    assert "was started with another grid (DCA seed 0: DCA-seed0-" in capsys.readouterr().err


def test_dry_run_prints_the_grid_and_runs_nothing(tmp_path, capsys):
    rc = ablate.main(["--table", "4", "--seeds", "2", "--dry-run", "--resources-per-trial", "cpu=2,gpu=1",
                      "--set", "train.epochs=1", *cli_args(tmp_path / "no-data", tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if " seed " in line]
    assert [(line.split()[0], line.split()[2]) for line in lines] == [
        (row, seed) for row in ("baseline", "+HKME", "+BMD", "VREMD") for seed in ("0", "1")]
    assert "model.hkme=false, model.bmd=false" in lines[0] and all("cpu=2, gpu=1" in line for line in lines)
    assert "synthetic data (profile smoke), not the paper's posetrack17 val" in out.splitlines()[0]  # the header
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "results").exists()


def test_dry_run_shows_the_fused_trials_and_refuses_one_over_the_memory_budget(tmp_path, capsys):
    args = ["--table", "6", "--seeds", "2", "--dry-run", *cli_args(tmp_path / "no-data", tmp_path)]
    assert ablate.main(args) == 0
    out = capsys.readouterr().out
    for seed in (0, 1):
        assert f"fused trial {seed + 1} (seed {seed}, one backbone pass per batch" in out
        assert "trains in the trial's process): DC, DA, DCA, DCA+BS" in out.splitlines()[-3 + seed]
    assert out.splitlines()[-1] == "2 fused trial(s), 0 ordinary trial(s)"
    assert ablate.main([*args, "--no-fuse"]) == 0
    assert "fused trial" not in capsys.readouterr().out  # (the dry run's paths hold this test's name)
    assert ablate.main([*args, "--fuse-rows", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 fused trial(s), 2 ordinary trial(s)"
    assert ablate.main([*args, "--fuse-memory-gib", "0.001"]) == 1
    err = capsys.readouterr().err
    assert "over the memory budget of 0.0 GiB (seed 0: DC, DA, DCA, DCA+BS needs ~" in err
    assert "nothing was run" in err and not (tmp_path / "ray_results").exists()


def test_bad_requests_fail_with_a_clear_message(tmp_path, capsys):
    assert ablate.main(["--table", "9", *cli_args(tmp_path, tmp_path)]) == 1
    assert "tables: no table 9, found [1, 2, 3, 4, 5, 6]" in capsys.readouterr().err
    assert ablate.main(["--table", "6", *cli_args(tmp_path / "none", tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "missing inputs:" in err and "none/index/train.parquet" in err
    assert ablate.main(["--table", "6", "--set", "model.motion_attention=dc", *cli_args(tmp_path, tmp_path)]) == 1
    assert "--set model.motion_attention: conflicts with" in capsys.readouterr().err
    assert ablate.main(["--table", "6", "--profile", "nope", "--dry-run"]) == 1
    assert "unknown profile 'nope'" in capsys.readouterr().err
