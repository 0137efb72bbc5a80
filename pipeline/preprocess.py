"""Stage `preprocess`: the sample index the Dataset reads, and dataset statistics.

    python pipeline/preprocess.py --crops data/crops --out data/index --stats metrics/dataset.json

Writes <out>/train.parquet and <out>/val.parquet (one row per 3-frame sample, see
vremd/data/dataset.py), each recording the dataset, split and crop settings it was cut from (from the crops
manifest's record: vremd/data/dataset_record.py), and a metrics json: persons, samples, frames and videos per
split, the visible count of each joint, and what the crops stage skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from vremd.atomic import atomic_write_bytes
from vremd.data.index import build_index
from vremd.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=Path, default=Path("data/crops"), help="crops dir (default: data/crops)")
    parser.add_argument("--out", type=Path, default=Path("data/index"), help="index dir (default: data/index)")
    parser.add_argument("--stats", type=Path, default=Path("metrics/dataset.json"), help="metrics json to write")
    args = parser.parse_args(argv)
    try:
        stats = build_index(args.crops, args.out)
    except (InputError, OSError) as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 1
    atomic_write_bytes(args.stats, orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    for split, s in stats.items():
        print(f"{args.out / (split + '.parquet')}: {s['samples']} samples, {s['persons']} persons, "
              f"{s['frames']} frames, {s['videos']} videos, {s['skipped_total']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
