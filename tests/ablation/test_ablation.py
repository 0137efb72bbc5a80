"""Ablation tables as data -> trial grid -> report: rows, seeds, overrides, failed trials, paper beside us."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from matplotlib.image import imread

from vremd.config import ConfigError, config_from_dict, smoke_config
from vremd.eval.tables import load_paper_numbers
from vremd.ablation.cost import parameters_outside_backbone
from vremd.model.vremd import build_model
from vremd.ablation.trials import _row_params
from vremd.ablation.grid import (AblationError, TableSpec, apply_overrides, build_grid, check_inputs, data_dirs,
                                       default_resources, grid_text, load_tables, paper_protocol, parse_resources)
from vremd.ablation.report import (TrialOutcome, report_dir, report_rows, summary_markdown, summary_text,
                                   write_report)

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = ROOT / "experiments" / "ablations.yaml"
PAPER = ROOT / "experiments" / "paper_numbers.yaml"
JOINTS = ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")


def ap(mean: float, offset: float = 0.0) -> dict[str, float]:
    """Per-joint AP metrics as training reports them (joints spread around `mean`)."""
    return {**{f"ap/{j}": mean + offset + i for i, j in enumerate(JOINTS)}, "ap/mean": mean + offset,
            "loss": 0.01, "epochs": 2}


def test_ablation_rows_are_the_papers_and_join_paper_numbers():
    tables = load_tables(ABLATIONS)
    paper = load_paper_numbers(PAPER)
    assert sorted(tables) == [1, 2, 3, 4, 5, 6]
    assert list(tables[6].rows) == ["DC", "DA", "DCA", "DCA+BS"]
    assert tables[6].rows["DCA+BS"] == {"model.motion_attention": "dca", "model.bidirectional_separation": True}
    assert [r["data.source"] for t in (1, 2, 3) for r in tables[t].rows.values()] == [
        "posetrack17", "posetrack18", "posetrack21"]
    for number in (4, 5, 6):  # same row names and the same overrides as the paper-numbers file
        paper_rows = {r["name"]: r["config"] for r in paper[f"table{number}"]["rows"]}
        assert paper_rows == tables[number].rows


def test_grid_has_every_row_at_every_seed_with_its_overrides():
    base = smoke_config()
    trials = build_grid(base, load_tables(ABLATIONS)[6], seeds=2)
    assert [(t.row, t.seed) for t in trials] == [(r, s) for r in ("DC", "DA", "DCA", "DCA+BS") for s in (0, 1)]
    for t in trials:
        cfg = config_from_dict(t.config)  # what the trial rebuilds: a valid Config
        assert cfg.train.seed == t.seed and cfg.model.motion_attention == t.overrides["model.motion_attention"]
        assert cfg.model.bidirectional_separation == t.overrides["model.bidirectional_separation"]
        assert cfg.model.dim == base.model.dim and cfg.profile == "smoke"
    assert len({t.run_name for t in trials}) == 8  # one training folder per trial
    assert trials[0].run_name.startswith("DC-seed0-") and trials[-1].run_name.startswith("DCA-BS-seed1-")
    shifted = build_grid(apply_overrides({"train": {"seed": 10}}, {}), TableSpec(9, "t", {"a": {}}), seeds=3)
    assert [t.seed for t in shifted] == [10, 11, 12]


def test_a_typo_in_a_row_names_the_file_row_and_close_match():
    table = TableSpec(6, "t", {"DC": {"model.motion_atention": "dc"}})
    with pytest.raises(AblationError, match=r"tables\.6\.rows\.DC: model\.motion_atention: unknown key "
                                            r"\(did you mean model\.motion_attention\?\)"):
        build_grid(smoke_config(), table, seeds=1)
    with pytest.raises(AblationError, match=r"model\.motion_attention: expected one of 'dc' \| 'da' \| 'dca'"):
        build_grid(smoke_config(), TableSpec(6, "t", {"DC": {"model.motion_attention": "xx"}}), seeds=1)
    with pytest.raises(AblationError, match="--seeds: expected at least 1"):
        build_grid(smoke_config(), table, seeds=0)


def test_set_that_a_row_overrides_is_refused():
    with pytest.raises(AblationError, match=r"--set model\.bmd: conflicts with .*tables\.4\.rows\.baseline"):
        build_grid(smoke_config(), load_tables(ABLATIONS)[4], seeds=1, fixed_keys=["model.bmd", "train.epochs"])
    trials = build_grid(smoke_config(), load_tables(ABLATIONS)[4], seeds=1, fixed_keys=["train.epochs"])
    assert len(trials) == 4


def test_bad_ablations_files_say_where(tmp_path):
    with pytest.raises(AblationError, match="no such ablations file"):
        load_tables(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("tables:\n  6:\n    rows:\n      DC: [1, 2]\n")
    with pytest.raises(AblationError, match=r"a\.yaml: tables\.6\.rows\.DC: expected a mapping"):
        load_tables(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("rows: {}\n")
    with pytest.raises(AblationError, match=r"b\.yaml: tables: expected a mapping"):
        load_tables(tmp_path / "b.yaml")


def test_resources_parse_and_defaults():
    assert parse_resources("cpu=2,gpu=1") == {"cpu": 2.0, "gpu": 1.0}
    assert parse_resources("CPU=0.5, accelerator_x=1") == {"cpu": 0.5, "accelerator_x": 1.0}
    for bad in ("cpu", "cpu=two", "gpu=-1", "=1"):
        with pytest.raises(AblationError, match="expected NAME=AMOUNT"):
            parse_resources(bad)
    with pytest.raises(AblationError, match="asks for nothing"):
        parse_resources("cpu=0")
    assert default_resources(smoke_config()) == {"cpu": 1.0, "gpu": 0.0}  # num_workers 0: trains in the trial
    ray_workers = apply_overrides({"train": {"num_workers": 2}}, {})
    assert default_resources(ray_workers)["cpu"] == 0  # the trial only drives its TorchTrainer
    assert default_resources(ray_workers)["memory"] > 0  # Tune refuses an empty request


def test_grid_text_lists_row_seed_overrides_and_resources():
    trials = build_grid(smoke_config(), load_tables(ABLATIONS)[5], seeds=2)
    text = grid_text(trials, {"cpu": 2.0, "gpu": 1.0})
    lines = text.splitlines()
    assert len(lines) == 8
    assert "no mask" in lines[0] and "seed 0" in lines[0] and "seed 1" in lines[1]
    assert "model.human_mask=false, model.keypoint_mask=false" in lines[0]
    assert all("cpu=2, gpu=1" in line and "trains in the trial's process" in line for line in lines)


def test_check_inputs_names_every_missing_path(tmp_path):
    trials = build_grid(smoke_config(), load_tables(ABLATIONS)[1], seeds=1,  # data.source posetrack17
                        data_of=data_dirs(str(tmp_path / "index-{source}"), str(tmp_path / "raw")))
    with pytest.raises(AblationError) as err:
        check_inputs(trials)
    message = str(err.value)
    assert "index-posetrack17/train.parquet" in message and "index-posetrack17/val.parquet" in message
    assert str(tmp_path / "raw" / "posetrack17" / "annotations" / "val") in message


def test_check_inputs_refuses_an_augmentation_past_the_stored_margin(smoke_data):
    """A row whose zoom-out the index's train canvas cannot hold is refused before any trial trains."""
    data_of = data_dirs(str(smoke_data.index), str(smoke_data.raw))
    fine, wide = (build_grid(smoke_config(), TableSpec(6, "t", {"r": {"augment.scale_max": s}}), seeds=1,
                             data_of=data_of) for s in (1.35, 1.6))
    check_inputs(fine)
    with pytest.raises(ConfigError, match=r"train\.parquet: its crops keep a margin of 30x22 px .* augment\.scale_max 1\.6"):
        check_inputs(wide)


def test_report_shows_mean_std_over_seeds_failed_rows_and_paper(tmp_path):
    outcomes = [
        TrialOutcome("DC", 0, "finished", ap(40.0)), TrialOutcome("DC", 1, "finished", ap(40.0, 2.0)),
        TrialOutcome("DA", 0, "finished", ap(50.0)), TrialOutcome("DA", 1, "failed", error="FileNotFoundError: x"),
        TrialOutcome("DCA", 0, "failed", error="RuntimeError: boom"), TrialOutcome("DCA", 1, "not run"),
    ]
    rows = report_rows(["DC", "DA", "DCA", "DCA+BS"], outcomes, load_paper_numbers(PAPER), 6)
    by = {r.name: r for r in rows}
    assert [r.state for r in rows] == ["ok", "partial", "failed", "not run"]
    assert by["DC"].ours["Mean"] == [40.0, 42.0] and by["DC"].paper == {"Mean": 84.7}
    text = summary_text(rows, "Table 6")
    dc = next(line for line in text.splitlines() if line.startswith("DC "))
    assert "84.7" in dc and f"41.0 ± {math.sqrt(2):.1f}" in dc and "-43.7" in dc and "2/2" in dc
    da = next(line for line in text.splitlines() if line.startswith("DA "))
    assert "50.0" in da and "1/2 (1 failed)" in da
    dca = next(line for line in text.splitlines() if line.startswith("DCA "))
    assert "failed" in dca and "0/2 (1 failed)" in dca
    assert "DCA: seed 0: RuntimeError: boom" in text  # the reason is printed, never dropped
    paths = write_report(tmp_path, 6, "Table 6", rows, outcomes)
    long = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    dc_mean = next(r for r in long if r["row"] == "DC" and r["column"] == "Mean")
    assert float(dc_mean["ours"]) == 41.0 and float(dc_mean["paper"]) == 84.7 and dc_mean["seeds"] == "2"
    assert float(dc_mean["ours_std"]) == pytest.approx(math.sqrt(2)) and float(dc_mean["delta"]) == pytest.approx(-43.7)
    assert next(r for r in long if r["row"] == "DCA" and r["column"] == "Mean")["state"] == "failed"
    trials = list(csv.DictReader(io.StringIO(paths["trials"].read_text())))
    assert [t["status"] for t in trials] == ["finished", "finished", "finished", "failed", "failed", "not run"]
    saved = json.loads(paths["json"].read_text())
    assert [r["state"] for r in saved["rows"]] == ["ok", "partial", "failed", "not run"]
    assert "<td>DCA+BS</td>" in paths["html"].read_text()
    for png in (paths["png"], paths["joints_png"]):
        image = imread(png)
        assert image.shape[0] > 100 and image.std() > 0


def test_a_report_replaces_the_table_folder_whole_or_not_at_all(tmp_path, small_disk):
    """The disk fills while the new table is written (its charts do not fit in 16 KiB): the earlier table stays
    complete, with no temp file or folder beside it; where it fits, the new table replaces the folder."""
    outcomes = [TrialOutcome("DC", 0, "finished", ap(40.0)), TrialOutcome("DA", 0, "failed", error="boom")]
    rows = report_rows(["DC", "DA"], outcomes, load_paper_numbers(PAPER), 6)
    earlier = small_disk.path / "table6"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"trials": [{"status": "finished"}]}')
    (earlier / "table6.md").write_text("the earlier table")
    with pytest.raises(OSError, match=rf"No space left on device: '{earlier}"):
        write_report(earlier, 6, "Table 6", rows, outcomes)
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["table6"]
    assert {p.name: p.read_text() for p in earlier.iterdir()} == {
        "results.json": '{"trials": [{"status": "finished"}]}', "table6.md": "the earlier table"}
    roomy = tmp_path / "results" / "table6"
    (roomy / "stale.txt").parent.mkdir(parents=True)
    (roomy / "stale.txt").write_text("from an older layout")
    paths = write_report(roomy, 6, "Table 6", rows, outcomes)
    assert sorted(p.name for p in roomy.iterdir()) == sorted(p.name for p in paths.values())  # stale.txt is gone
    assert sorted(p.name for p in roomy.parent.iterdir()) == ["table6"]


def test_a_run_where_no_trial_finished_never_replaces_finished_results(tmp_path):
    failed = [TrialOutcome("DC", 0, "failed", error="CheckpointError: x"), TrialOutcome("DA", 0, "not run")]
    some = [failed[0], TrialOutcome("DA", 0, "finished", ap(50.0))]
    out = tmp_path / "table6"
    assert report_dir(out, failed) == out  # nothing there yet
    write_report(out, 6, "Table 6", report_rows(["DC", "DA"], some, {}, 6), some)
    assert report_dir(out, failed) == tmp_path / "table6-failed"
    assert report_dir(out, some) == out  # a finished trial: the new table is the one to keep
    write_report(out, 6, "Table 6", report_rows(["DC", "DA"], failed, {}, 6), failed)  # an all-failed table there
    assert report_dir(out, failed) == out  # replaces only another table without results


def test_tables_1_to_3_place_ours_among_the_peers():
    outcomes = [TrialOutcome("VREMD", 0, "finished", ap(70.0))]
    rows = report_rows(["VREMD"], outcomes, load_paper_numbers(PAPER), 1)
    assert [(r.name, r.state) for r in rows] == [("VREMD", "ok"), ("DCPose", "paper only"), ("TDMI-ST", "paper only")]
    assert rows[0].paper["Head"] == 89.9 and rows[1].paper == {"Mean": 82.8}
    md = summary_markdown(rows, "Table 1")
    assert "| DCPose | 82.8 |" in md and "| VREMD | 87.6 | 70.0 | -17.6 |" in md
    assert "| Head | 89.9 | 70.0 | -19.9 |" in md  # per-joint table of our row against the paper's


def test_row_paths_resolve_on_the_driver_and_missing_weights_are_refused_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (trial,) = build_grid(smoke_config(), TableSpec(6, "t", {"w": {"model.pretrained": "weights/x.pth"}}), seeds=1,
                          data_of=data_dirs(str(tmp_path / "index"), str(tmp_path / "raw")))
    assert trial.config["model"]["pretrained"] == str(tmp_path / "weights" / "x.pth")  # trials run elsewhere
    with pytest.raises(AblationError, match=r"model\.pretrained: no such weights file: .*weights/x\.pth; nothing was run"):
        check_inputs([trial])


def test_report_prints_params_beside_ap(tmp_path):
    trials = build_grid(smoke_config(), load_tables(ROOT / "experiments" / "ablations.yaml")[6], seeds=2)
    params = _row_params(trials)
    assert set(params) == {"DC", "DA", "DCA", "DCA+BS"}
    assert params["DCA+BS"] > params["DCA"] > params["DC"]  # BS: a second ADC stream; DC: no ADC block
    smoke = smoke_config().model
    backbone, rest = parameters_outside_backbone(smoke)
    assert backbone + rest == sum(p.numel() for p in build_model(smoke).parameters())
    outcomes = [TrialOutcome(r, 0, "finished", ap(50.0)) for r in params]
    rows = report_rows(list(params), outcomes, load_paper_numbers(PAPER), 6, params)
    text = summary_text(rows, "Table 6")
    assert "Params (M)" in text.splitlines()[2]
    dcabs = next(line for line in text.splitlines() if line.startswith("DCA+BS "))
    assert f"{params['DCA+BS'] / 1e6:.2f}" in dcabs
    assert "| Row | Paper | Ours | Delta | Params (M) |" in summary_markdown(rows, "Table 6")
    paths = write_report(tmp_path, 6, "Table 6", rows, outcomes)
    long = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert {int(r["params"]) for r in long if r["row"] == "DC"} == {params["DC"]}


def test_each_table_runs_on_the_papers_dataset_and_protocol_on_real_data():
    paper = load_paper_numbers(PAPER)
    real = config_from_dict({"data": {"source": "posetrack18"}})
    apply, note = paper_protocol(paper["table4"], real, [], {})
    assert apply == {"data.source": "posetrack17", "eval.protocol": "posetrack18"}
    assert note == "posetrack17 val, protocol posetrack18, as the paper"
    apply, _ = paper_protocol(paper["table3"], real, [], {})
    assert apply == {"data.source": "posetrack21", "eval.protocol": "posetrack21"}
    forced = {"data.source": "posetrack18"}  # the user insists on PoseTrack18 for table 4
    apply, note = paper_protocol(paper["table4"], real, ["data.source"], forced)
    assert apply == {"eval.protocol": "posetrack18"}
    assert note == "NOT the paper's setting: --set data.source=posetrack18 (paper: posetrack17)"


def test_synthetic_data_changes_nothing_and_says_the_paper_column_is_a_reference():
    apply, note = paper_protocol(load_paper_numbers(PAPER)["table6"], smoke_config(), [], {})
    assert apply == {}
    assert note.startswith("synthetic data (profile smoke), not the paper's posetrack17 val")
