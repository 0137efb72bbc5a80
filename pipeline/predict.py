"""Run a trained VREMD on your own video (thin CLI; the work is in vremd.predict).

    python pipeline/predict.py VIDEO.mp4 --boxes dets.json --track --checkpoint models/final.pt \
        --out reports/predict/000001_mpii_test.json --overlay reports/predict/overlay.mp4

Exit status 2 with a one-line message on bad input (unreadable video, bad box file, wrong checkpoint).
"""

from __future__ import annotations

import sys

from vremd.predict.cli import main

if __name__ == "__main__":
    sys.exit(main())
