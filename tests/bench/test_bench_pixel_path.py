"""`benchmarks.pixel_path` at smoke size: one model scored through the stored crops and through predict's crops."""

from __future__ import annotations

import math
import re

import pytest

from benchmarks import pixel_path
from benchmarks.result import read_results
from tests.predict.predict_fixtures import save_smoke_checkpoint


@pytest.mark.slow  # two validations of the smoke val split, one through full-frame decodes
def test_pixel_path_scores_both_paths_and_records_their_difference(smoke_data, tmp_path, capsys):
    model = save_smoke_checkpoint(tmp_path / "final.pt")
    rc = pixel_path.main(["--model", str(model), "--index", str(smoke_data.index), "--raw", str(smoke_data.raw),
                          "--batch-size", "4", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    totals = {}
    for name in ("stored JPEG crops (train, evaluate)", "raw crops (predict)"):
        cells = next(line for line in out.splitlines() if line.startswith(f"| {name} |")).strip("| \n").split(" | ")
        assert len(cells) == 9  # the path, then Head .. Ankle and Total
        totals[name] = float(cells[-1])
    difference = next(line for line in out.splitlines() if line.startswith("| difference |"))
    (result,) = read_results(tmp_path / "r.json")
    assert result.name == "pixel_path" and result.unit == "AP"
    printed = totals["raw crops (predict)"] - totals["stored JPEG crops (train, evaluate)"]  # each rounded to 0.1
    assert math.isfinite(result.value) and abs(result.value - printed) <= 0.1 + 1e-9
    assert abs(result.value - float(difference.rstrip(" |").split(" | ")[-1])) <= 0.05 + 1e-9
    assert f"Total AP {totals['stored JPEG crops (train, evaluate)']:.1f} stored vs " in result.details
    pixels = re.search(r"mean \|pixel difference\| of the crops ([\d.]+) / 255", out)
    assert pixels and 0.0 <= float(pixels.group(1)) < 10.0  # the same person rectangle, the same frames
