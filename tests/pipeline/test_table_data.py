"""Each table trains and scores on its own dataset (issue 28, item 1), on small PoseTrack18- and PoseTrack2017-format
archives: a profile whose own data is PoseTrack18 (as `paper`) cuts data/index with the main pipeline's stages and
the PoseTrack2017 of tables 4-6 with `pipeline/table_data.py` into data/tables/posetrack17/. The dry run shows what
every trial reads, a trial whose index holds another dataset is refused before anything is written, and a
table-4 run trains and scores on the PoseTrack2017 index.

Before: every trial read `--index data/index` (PoseTrack18 here) while scoring against data/raw/posetrack17, so it
trained a whole epoch and failed at its first validation, or, with PoseTrack17's video names (they repeat
PoseTrack18's), silently trained on whatever data/index held.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import pipeline.ablate as ablate
from pipeline import crops, download, evaluate, preprocess, pretrain, table_data, train
from vremd.config import load_config, smoke_config
from vremd.data.dataset_record import read_index_record
from vremd.data.sources.download import prepare_synthetic
from vremd.data.sources.posetrack17 import POSEVAL_TO_SLOT
from vremd.train.identity import dvc_dir_md5

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "predict"))
from predict_fixtures import save_smoke_checkpoint  # noqa: E402


def _annorect(ann: dict) -> dict:
    """A PoseTrack2017 person (one-element lists, poseval joint ids, head rectangle) from a 2018 annotation."""
    x, y, w, h = ann["bbox_head"]
    kp = ann["keypoints"]
    points = [{"id": [k], "x": [kp[3 * s]], "y": [kp[3 * s + 1]], "is_visible": [int(kp[3 * s + 2] > 0)]}
              for k, s in enumerate(POSEVAL_TO_SLOT) if any(kp[3 * s: 3 * s + 3])]
    return {"x1": [x], "y1": [y], "x2": [x + w], "y2": [y + h], "track_id": [ann["track_id"]],
            "annopoints": [{"point": points}]}


def _write_posetrack17(dataset: Path, dest: Path) -> None:
    """The 2018-layout `dataset` as PoseTrack2017 ships: `annolist` json of the labeled frames under
    annotations/{train,val}/<digits>_<kind>.json, frames at images/bonn_5sec/<digits>_<kind>/<n:08d>.jpg."""
    for split in ("train", "val"):
        for json_path in sorted((dataset / "annotations" / split).glob("*.json")):
            data = json.loads(json_path.read_text())
            folder = "_".join(json_path.stem.split("_")[:2])  # 000101_mpii_test -> 000101_mpii
            (dest / "images" / "bonn_5sec" / folder).mkdir(parents=True)
            annolist = []
            for image in data["images"]:
                name = f"images/bonn_5sec/{folder}/{int(Path(image['file_name']).stem) + 1:08d}.jpg"
                shutil.copy(dataset / image["file_name"], dest / name)
                if image["is_labeled"]:
                    rects = [_annorect(a) for a in data["annotations"] if a["image_id"] == image["id"]]
                    annolist.append({"image": [{"name": name}], "is_labeled": [1], "annorect": rects})
            (dest / "annotations" / split).mkdir(parents=True, exist_ok=True)
            (dest / "annotations" / split / f"{folder}.json").write_text(json.dumps({"annolist": annolist}))


def _archive(root: Path, name: str, seed: int, posetrack17: bool) -> Path:
    """A PoseTrack-format archive of smoke-sized synthetic videos of `seed` (`posetrack_data/` inside)."""
    synthetic = root / f"{name}-synthetic"
    prepare_synthetic(dataclasses.replace(smoke_config().data.synthetic, seed=seed), synthetic, progress=False)
    tree = root / f"{name}-tree" / "posetrack_data"
    if posetrack17:
        _write_posetrack17(synthetic, tree)
    else:
        shutil.copytree(synthetic, tree, ignore=shutil.ignore_patterns(".download.json"))
    archive = root / f"{name}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, "posetrack_data")
    return archive


@pytest.fixture(scope="module")
def project(tmp_path_factory, write_params):
    """A project whose profile `real` is the smoke config on PoseTrack18 (val boxes GT), its tables' PoseTrack2017
    archives in `data.table_archives`: data/index cut by the main stages, data/tables/posetrack17 by table_data."""
    root = tmp_path_factory.mktemp("project")
    pt18, pt17 = _archive(root / "src", "pt18", 5, False), _archive(root / "src", "pt17", 6, True)
    params = write_params(root, profile="real", data__source="posetrack18", data__urls=[str(pt18)],
                          data__table_archives__posetrack17__urls=[str(pt17)])
    common = ["--params", str(params), "--no-progress"]
    data = root / "data"
    assert download.main([*common, "--out", str(data / "raw"), "--cache", str(data / "downloads")]) == 0
    assert crops.main([*common, "--raw", str(data / "raw"), "--out", str(data / "crops")]) == 0
    assert preprocess.main(["--crops", str(data / "crops"), "--out", str(data / "index"),
                            "--stats", str(root / "dataset.json")]) == 0
    assert table_data.main([*common, "--source", "posetrack17", "--out", str(data / "tables" / "posetrack17"),
                            "--cache", str(data / "downloads")]) == 0
    return root


def test_each_dataset_is_cut_into_its_own_index_which_records_it(project):
    tables = project / "data" / "tables" / "posetrack17"
    assert json.loads((tables / "record.json").read_text())["needed"] is True
    assert sorted(p.name for p in tables.iterdir()) == ["crops", "dataset.json", "detected", "index", "raw",
                                                        "record.json"]
    assert (tables / "raw" / "posetrack17" / "annotations" / "val").is_dir()
    for split in ("train", "val"):
        assert read_index_record(project / "data" / "index" / f"{split}.parquet").describe() == f"posetrack18 {split}"
        assert read_index_record(tables / "index" / f"{split}.parquet").describe() == f"posetrack17 {split}"
    # the two datasets share video names, as PoseTrack17 and 18 do: only the record tells the indexes apart
    assert {p.name for p in (tables / "raw" / "posetrack17" / "annotations" / "val").iterdir()} == \
        {p.name for p in (project / "data" / "raw" / "posetrack18" / "annotations" / "val").iterdir()}


def test_table_data_is_only_a_record_where_the_profile_already_holds_the_tables_dataset(project, write_params,
                                                                                          tmp_path, capsys):
    for params, source in ((write_params(tmp_path / "demo"), "posetrack17"),  # synthetic: tables read data/index
                           (project / "params.yaml", "posetrack18")):  # the profile's own dataset
        out = tmp_path / source
        assert table_data.main(["--params", str(params), "--source", source, "--out", str(out)]) == 0
        assert "not needed" in capsys.readouterr().out
        assert [p.name for p in out.iterdir()] == ["record.json"]
        assert json.loads((out / "record.json").read_text())["needed"] is False


def test_table_data_without_the_archives_is_a_one_line_error(write_params, tmp_path, capsys):
    params = write_params(tmp_path, profile="real", data__source="posetrack18")
    assert table_data.main(["--params", str(params), "--source", "posetrack17", "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert err == ("table_data: error: data.table_archives.posetrack17.urls: empty, but the tables of profile real on "
                   "posetrack17 need its archives (URLs or local paths you are licensed to use)\n")
    assert not (tmp_path / "t").exists()


def test_the_tables_dataset_is_cropped_with_its_own_detector_boxes_never_another_datasets(write_params, tmp_path,
                                                                                          capsys):
    params = write_params(tmp_path, profile="real", data__source="posetrack18", data__val_boxes="detect",
                          data__table_archives__posetrack17__urls=["pt17.tar"])
    boxes = tmp_path / "tables" / "detected" / "val.json"  # the detect step writes them there, crops reads them
    sets = table_data._dataset_overrides(load_config(params, "real"), "posetrack17", boxes, params)
    assert sets == ["data.source=posetrack17", f'data.urls=["{tmp_path / "pt17.tar"}"]', "data.sha256=[]",
                    f"data.val_boxes={boxes}"]
    params = write_params(tmp_path, profile="real", data__source="posetrack18", data__val_boxes="pt18-boxes.json",
                          data__table_archives__posetrack17__urls=["pt17.tar"])
    assert table_data.main(["--params", str(params), "--source", "posetrack17", "--out", str(tmp_path / "t")]) == 1
    assert capsys.readouterr().err == (f"table_data: error: data.val_boxes {tmp_path / 'pt18-boxes.json'}: boxes of "
                                       "posetrack18 val, not of posetrack17's; set gt or detect (the detector's boxes "
                                       "on posetrack17 val)\n")


def _trial_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.startswith(" " * 16) and ": index " in line]


def test_dry_run_prints_each_trials_index_and_gt_folder(project, monkeypatch, capsys):
    monkeypatch.chdir(project)  # the defaults are relative to the working directory, as from the repo root
    params = ["--params", "params.yaml"]
    assert ablate.main(["--table", "4", "--seeds", "2", "--dry-run", *params]) == 0
    out = capsys.readouterr().out
    assert "posetrack17 val, protocol posetrack18, as the paper" in out.splitlines()[0]
    tables = project / "data" / "tables" / "posetrack17"
    assert _trial_lines(out) == [f"posetrack17: index {tables / 'index'}, GT "
                                 f"{tables / 'raw' / 'posetrack17' / 'annotations' / 'val'}"] * 8
    assert ablate.main(["--table", "2", "--dry-run", *params]) == 0
    assert _trial_lines(capsys.readouterr().out) == [
        f"posetrack18: index {project / 'data' / 'index'}, GT {project / 'data/raw/posetrack18/annotations/val'}"]
    assert ablate.main(["--table", "4", "--dry-run", "--index", "elsewhere/{source}", *params]) == 0
    first = _trial_lines(capsys.readouterr().out)[0]
    assert first.startswith(f"posetrack17: index {project / 'elsewhere' / 'posetrack17'}, GT {project / 'data'}")


def _nothing_written(root: Path) -> None:
    assert not (root / "mlflow.db").exists() and not (root / "ray_results").exists()
    assert not (root / "results").exists()


@pytest.mark.timeout(120)
def test_a_trial_whose_index_holds_another_dataset_is_refused_before_anything_starts(project, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copytree(project / "data", tmp_path / "data", symlinks=True)
    shutil.copy(project / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    run = ["--table", "4", "--params", "params.yaml", "--storage", "ray_results", "--out", "results"]
    index = tmp_path / "data" / "index"
    assert ablate.main([*run, "--index", "data/index"]) == 1  # the PoseTrack18 index for a PoseTrack2017 table
    assert capsys.readouterr().err == (
        f"ablate: error: {index / 'train.parquet'}: holds posetrack18 train samples, but trial 'baseline' (seed 0) "
        "asks for posetrack17 train; give it an index cut from posetrack17\n")
    _nothing_written(tmp_path)
    tables_index = tmp_path / "data" / "tables" / "posetrack17" / "index"
    shutil.rmtree(tables_index)
    shutil.copytree(index, tables_index)  # cut by hand from PoseTrack18 into the table's folder: same video names
    assert ablate.main(run) == 1
    err = capsys.readouterr().err
    assert "holds posetrack18 train samples, but trial 'baseline' (seed 0) asks for posetrack17" in err
    shutil.copy(tmp_path / "data" / "index" / "val.parquet", tables_index / "train.parquet")  # another split
    assert "train.parquet: holds posetrack18 val samples" in (ablate.main(run), capsys.readouterr().err)[1]
    _nothing_written(tmp_path)
    # train.py, evaluate.py and pretrain.py, each on its own --index, the same: the profile's data.source is posetrack18
    shutil.rmtree(tables_index)
    shutil.copytree(project / "data" / "tables" / "posetrack17" / "index", tables_index)
    asks = "but params.yaml (profile real) asks for posetrack18"
    assert train.main(["--params", "params.yaml", "--index", "data/tables/posetrack17/index", "--out", "models",
                       "--no-progress"]) == 1
    assert capsys.readouterr().err == ("train: error: data/tables/posetrack17/index/train.parquet: holds posetrack17 "
                                       f"train samples, {asks} train; give it an index cut from posetrack18\n")
    model = save_smoke_checkpoint(tmp_path / "final.pt")
    assert evaluate.main(["--params", "params.yaml", "--model", str(model), "--index", "data/tables/posetrack17/index",
                          "--out", "reports", "--metrics", "ap.json", "--no-progress"]) == 1
    assert f"val.parquet: holds posetrack17 val samples, {asks} val" in capsys.readouterr().err
    assert pretrain.main(["--params", "params.yaml", "--set", "model.pretrained_url=pretrain", "--index",
                          "data/tables/posetrack17/index", "--out", "pretrain", "--no-progress"]) == 1
    assert f"val.parquet: holds posetrack17 val samples, {asks} val" in capsys.readouterr().err
    _nothing_written(tmp_path)
    assert not any((tmp_path / name).exists() for name in ("models", "reports", "ap.json", "pretrain"))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_table4_trains_and_scores_on_the_posetrack17_index(project, local_ray, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc = ablate.main(["--table", "4", "--params", "params.yaml", "--storage", str(tmp_path / "ray_results"),
                      "--out", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "fused trial 1 (seed 0" in out
    saved = json.loads((tmp_path / "results" / "table4" / "results.json").read_text())
    client = MlflowClient(uri)
    parent = client.get_run(saved["mlflow_parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    tables_index = project / "data" / "tables" / "posetrack17" / "index"
    assert sorted(r.data.tags["ablation.row"] for r in children) == ["+BMD", "+HKME", "VREMD", "baseline"]
    for run in children:  # trained on the PoseTrack2017 index, scored against its GT
        assert run.info.status == "FINISHED" and "ap/mean" in run.data.metrics
        assert run.data.params["data.source"] == "posetrack17"
        assert run.data.tags["dvc_data_hash"] == dvc_dir_md5(tables_index)
