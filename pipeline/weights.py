"""Stage `weights`: put the backbone's pretrained checkpoint at `model.pretrained`, verified, with a manifest.

    python pipeline/weights.py [--manifest weights/manifest.json] [--cache data/downloads] [--set ...]

- `model.pretrained_url` set: downloaded with the data's download code (resumed after an interruption,
  progress bar) into the cache, its sha256 checked against `model.pretrained_sha256`, then linked to
  `model.pretrained`. The url may also be a local path or a file:// URL.
- url empty, `model.pretrained` an existing file (placed by hand): its sha256 is checked and recorded.
- `model.pretrained` empty (a backbone trained from scratch): the manifest says so; nothing else is done.

`model.pretrained_sha256` is the full hex digest or a prefix of at least 8 hex digits: OpenMMLab names each
published checkpoint after the first 8 of its sha256 (`...-53609f55_20230314.pth`). The checkpoint is then
loaded once into a backbone of the profile's size, so a wrong layout or size fails here, naming both sizes,
before any training starts. The manifest records source, path, sha256, layout and size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.cli_config import add_config_args, config_from_args
from vremd.atomic import atomic_write, atomic_write_text
from vremd.config import ModelConfig
from vremd.data.sources.archives import link_or_copy
from vremd.data.sources.download import DownloadError, fetch
from vremd.errors import InputError
from vremd.model.backbone import ViTBackbone, load_vitpose_checkpoint

MIN_PREFIX = 8  # hex digits of a sha256 prefix (OpenMMLab's published file names carry 8)


def _expected_digest(model: ModelConfig) -> str:
    expected = model.pretrained_sha256.strip().lower()
    if expected and (len(expected) < MIN_PREFIX or len(expected) > 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise DownloadError(
            f"model.pretrained_sha256: {model.pretrained_sha256!r} is not a sha256 hex digest or a prefix of "
            f"at least {MIN_PREFIX} hex digits"
        )
    return expected


def _install(source: Path, dest: Path) -> None:
    """Link (or copy) the verified file to `dest` atomically: a reader never sees half a checkpoint."""
    if dest.exists() and os.path.samefile(source, dest):
        return
    atomic_write(dest, lambda tmp: (tmp.unlink(), link_or_copy(source, tmp)))


def prepare_weights(model: ModelConfig, cache_dir: Path, progress: bool = True) -> dict:
    """Make `model.pretrained` hold the verified checkpoint; return the manifest (see the module docstring)."""
    if not model.pretrained:
        return {"pretrained": None, "note": "model.pretrained is empty: the backbone starts from random weights"}
    dest = Path(model.pretrained)
    expected = _expected_digest(model)
    source = model.pretrained_url or str(dest)
    fetched = fetch(source, cache_dir, progress=progress, sha256_key=None)  # checked here: a prefix is enough
    if not fetched.sha256.startswith(expected):
        raise DownloadError(
            f"{fetched.path}: sha256 {fetched.sha256} does not start with model.pretrained_sha256 {expected} "
            f"({source}); delete the file to download it again"
        )
    if not expected:
        print(f"weights: {source}: no model.pretrained_sha256 given, digest {fetched.sha256} not checked")
    _install(fetched.path, dest)
    backbone = ViTBackbone((model.img_height, model.img_width), model.patch_size, model.embed_dim, model.depth,
                           model.num_heads, frozen=True)
    layout = load_vitpose_checkpoint(backbone, dest)
    return {
        "pretrained": str(dest), "source": source, "sha256": fetched.sha256, "bytes": dest.stat().st_size,
        "layout": layout, "embed_dim": model.embed_dim, "depth": model.depth,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--manifest", type=Path, default=Path("weights/manifest.json"),
                        help="what was installed, as json (default: weights/manifest.json)")
    parser.add_argument("--cache", type=Path, default=Path("data/downloads"),
                        help="where downloads are kept and resumed, as the data's (default: data/downloads)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    try:
        model = config_from_args(args).model
        manifest = prepare_weights(model, args.cache, progress=not args.no_progress)
    except (InputError, OSError) as exc:
        print(f"weights: error: {exc}", file=sys.stderr)
        return 1
    atomic_write_text(args.manifest, json.dumps(manifest, indent=2) + "\n")
    if manifest["pretrained"] is None:
        print(f"weights: {manifest['note']}")
    else:
        print(f"weights: {manifest['pretrained']} ({manifest['layout']} layout, {manifest['bytes'] / 1e6:.1f} MB, "
              f"sha256 {manifest['sha256'][:12]}...) ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
