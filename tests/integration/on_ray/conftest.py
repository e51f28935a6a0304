"""One real local Ray cluster shared by this package's modules: starting one costs about a minute on
2 cores. Package scope, so it is stopped (by its processes' PIDs) right after the last module here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.raycluster import RayCluster, ray_cluster


@pytest.fixture(scope="package")
def cluster() -> Iterator[RayCluster]:
    with ray_cluster(head_cpus=2, worker_cpus=1) as ray:
        yield ray
