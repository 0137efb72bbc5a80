"""Stage `download`: build data/raw/<source> from PoseTrack archives or the synthetic generator.

    python pipeline/download.py --out data/raw [--cache data/downloads] [--set data.source=...]

Real data (posetrack17/18/21): every `data.urls` entry (http(s) URL, file:// URL or local path)
is downloaded into the cache (resumed after an interruption), checked against `data.sha256`,
extracted safely, converted to the 2018 layout for posetrack17, validated and moved into place.
Synthetic data is generated into a temporary folder and renamed into place. A re-run whose
output was built from the same inputs does nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cli_config import add_config_args, config_from_args
from vremd.data.sources.download import prepare_real, prepare_synthetic, summarize
from vremd.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="raw data root (default: data/raw)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"),
                        help="where downloaded archives are kept (default: data/downloads)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    try:
        data = config_from_args(args).data
        dataset_dir = args.out / data.source
        if data.source == "synthetic":
            built = prepare_synthetic(data.synthetic, dataset_dir, progress=not args.no_progress)
        else:
            built = prepare_real(data.source, data.urls, data.sha256, dataset_dir, args.cache,
                                 progress=not args.no_progress)
        summary = summarize(dataset_dir)
    except (InputError, OSError) as exc:  # ConfigError, ArchiveError, DownloadError, PoseTrackFormatError; the network
        print(f"download: error: {exc}", file=sys.stderr)
        return 1
    print(f"{dataset_dir}: {'built' if built else 'up to date, nothing to do'}")
    for split, counts in summary.items():
        print(f"  {split:5s} " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
