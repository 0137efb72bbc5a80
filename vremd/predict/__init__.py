"""Run a trained VREMD on your own video: frames + person boxes -> PoseTrack json, overlay, figures.

`vremd.predict.run.run_prediction(PredictRequest(...))` is the library entry; `python -m vremd.predict` the CLI.
This file imports nothing, so a stage that needs one module of the package (the train stage logs the MLflow
model with `mlflow_model`) does not depend on the video reader and the detector too.
"""
