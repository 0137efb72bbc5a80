"""A team's MLflow beyond one training: the PostgreSQL-backed tracking server (server.py), a load of concurrent
writers against a store (load.py) and the compare-view screenshot of an ablation table (ui_snapshot.py).

None of it runs inside a training: the train stage never imports this package.
"""
