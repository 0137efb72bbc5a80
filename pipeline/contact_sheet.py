"""Render a contact sheet of synthetic frames with their GT skeletons and boxes.

    python pipeline/contact_sheet.py --out docs/synthetic_contact_sheet.png [--videos 4 --seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from vremd.config import SyntheticConfig
from vremd.data.draw import contact_sheet, write_image
from vremd.data.posetrack import list_videos
from vremd.data.synthetic.generate import generate_dataset
from vremd.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_contact_sheet.png"))
    parser.add_argument("--videos", type=int, default=4, help="videos to generate (2 frames each)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(SyntheticConfig(), seed=args.seed, train_videos=args.videos, val_videos=0,
                              min_frames=24, max_frames=32)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_dataset(Path(tmp) / "synthetic", cfg, progress=True)
            sheet = contact_sheet(Path(tmp) / "synthetic", list_videos(Path(tmp) / "synthetic", "train"))
        write_image(args.out, sheet)
    except (InputError, OSError) as exc:  # e.g. --videos 0: no labeled frames; a full disk
        print(f"contact_sheet: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}); generated {summary['frames']} frames "
          f"at {summary['frames_per_s']} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
