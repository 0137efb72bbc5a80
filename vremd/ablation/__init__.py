"""The paper's tables as sweeps of trainings: grid (rows x seeds), Tune trial runner, twin reuse, report,
and the rerun of a logged training (reproduce).

`vremd.train` is one training run; this package runs many of them and never the other way round.
"""
