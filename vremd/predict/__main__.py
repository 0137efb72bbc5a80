"""`python -m vremd.predict VIDEO --boxes BOXES --out PRED.json [--overlay OUT.mp4]`."""

import sys

from vremd.predict.cli import main

if __name__ == "__main__":
    sys.exit(main())
