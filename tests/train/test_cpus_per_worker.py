"""CPUs per Ray Train worker come from what one node can hold, not from the cluster total."""

from __future__ import annotations

import pytest

from vremd.train.ray_train import cpus_per_worker


@pytest.mark.parametrize("nodes,workers,expected", [
    ([2.0], 2, 1.0),  # this machine: two workers of one CPU
    ([2.0], 1, 2.0),
    ([8.0, 8.0], 1, 8.0),  # the cluster total (16) fits on no node
    ([8.0, 8.0], 2, 8.0),
    ([8.0, 8.0], 3, 4.0),  # 16 // 3 = 5 would place one worker per node: the third never starts
    ([16.0, 4.0], 2, 8.0),  # both on the big node
    ([16.0, 4.0], 3, 5.0),
    ([4.0, 0.0], 2, 2.0),  # a GPU-only node with no CPU holds no worker
    ([1.0], 4, 1.0),  # fewer CPUs than workers: one each, Ray waits for capacity
])
def test_every_worker_fits_on_a_node(nodes, workers, expected):
    share = cpus_per_worker(nodes, workers)
    assert share == expected
    assert share == 1.0 or sum(int(n // share) for n in nodes) >= workers
