"""Regenerate the ablation results page (docs/results.md) from the committed results, or check it is current.

    python pipeline/results_page.py            # rewrite its generated blocks, cited values and figures
    python pipeline/results_page.py --check    # exit 1 naming what differs from experiments/results/

Each table's block and figure come from `experiments/results/table<N>/results.json` (written by
`pipeline/ablate.py --table N`, committed); prose cites values with `<!-- cite N/row/column/stat -->`.
tests/ablation/test_page.py runs `--check` on the committed page, as tests/test_bench_report.py does for
the benchmark table, so the page cannot drift from the results it is generated from.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pipeline.cli_config import REPO_DIR
from vremd.ablation.page import (BLOCK, CITE, figure_name, load_results, render_page, stray_numbers,
                                 write_figure)
from vremd.atomic import atomic_write_text
from vremd.errors import InputError


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO_DIR)) if path.is_relative_to(REPO_DIR) else str(path)


def _stale_figures(page: Path, results: dict) -> list[str]:
    """The figures beside `page` that differ from what their table's results draw (or are missing)."""
    stale = []
    with tempfile.TemporaryDirectory(prefix="vremd-page-") as tmp:
        for table, found in results.items():
            path = page.parent / "images" / figure_name(table)
            if found is not None and (not path.is_file() or path.read_bytes() !=
                                      write_figure(found, Path(tmp) / path.name).read_bytes()):
                stale.append(_shown(path))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", type=Path, default=REPO_DIR / "docs" / "results.md")
    parser.add_argument("--results", type=Path, default=REPO_DIR / "experiments" / "results")
    parser.add_argument("--check", action="store_true", help="only check that the page and figures are current")
    args = parser.parse_args(argv)
    try:
        text = args.page.read_text()
        tables = sorted({int(t) for t in BLOCK.findall(text)} | {int(k.split("/")[0]) for k, _ in CITE.findall(text)
                                                                  if k.split("/")[0].isdigit()})
        results = {t: load_results(args.results, t) for t in tables}
        new = render_page(text, results, {t: _shown(args.results / f"table{t}" / "results.json") for t in tables},
                          {t: f"images/{figure_name(t)}" for t in tables})
        stale = _stale_figures(args.page, results) if args.check else []
    except (InputError, OSError) as exc:
        print(f"results_page: error: {exc}", file=sys.stderr)
        return 1
    stray = stray_numbers(new)
    for line in stray:
        print(f"results_page: {_shown(args.page)}: a number in the prose that no result backs (cite it): {line}",
              file=sys.stderr)
    if args.check:
        if new != text or stale:
            what = ", ".join((["its generated blocks or cited values"] if new != text else []) + stale)
            print(f"results_page: {_shown(args.page)}: {what} differ from {_shown(args.results)}: run "
                  "python pipeline/results_page.py", file=sys.stderr)
            return 1
        return 1 if stray else 0
    if new != text:
        atomic_write_text(args.page, new)
    drawn = [_shown(write_figure(found, args.page.parent / "images" / figure_name(t)))
             for t, found in results.items() if found is not None]
    print(f"{_shown(args.page)}: {'rewritten' if new != text else 'already current'} from {_shown(args.results)} "
          f"(tables {', '.join(map(str, tables))}: {sum(r is not None for r in results.values())} with results)"
          + (f"; figures {', '.join(drawn)}" if drawn else ""))
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
