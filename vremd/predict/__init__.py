"""Run a trained VREMD on your own video: frames + person boxes -> PoseTrack json, overlay, figures.

`run_prediction(PredictRequest(...))` is the library entry; `python -m vremd.predict` the CLI.
"""

from vremd.predict.run import PredictRequest, PredictSummary, run_prediction

__all__ = ["PredictRequest", "PredictSummary", "run_prediction"]
