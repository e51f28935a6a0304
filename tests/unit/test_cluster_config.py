"""Pure parts of the cluster support (issue 16): InstanceType sizing for Ray replicas, database URLs,
which transform jobs run on Ray Data."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.backends.ray.replica import container_execution_parameters, worker_threads
from modelhost.backends.ray.sizing import GIB, ReplicaResources, resources_for
from modelhost.jobs.executor import TransformPlan
from modelhost.jobs.ray_executor import runs_on_ray
from modelhost.store.db import DatabaseUnavailable, MetadataStore, engine_url
from modelhost.store.logs import JobLog
from tests.unit.fakes import make_settings


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("ml.m5.large", ReplicaResources(2, 8, 0)),
        ("ml.m5.xlarge", ReplicaResources(4, 16, 0)),
        ("ml.m5.4xlarge", ReplicaResources(16, 64, 0)),
        ("ml.c5.2xlarge", ReplicaResources(8, 16, 0)),
        ("ml.r5.xlarge", ReplicaResources(4, 32, 0)),
        ("ml.t2.medium", ReplicaResources(2, 4, 0)),
        ("ml.g5.xlarge", ReplicaResources(4, 16, 1)),
        ("ml.p3.8xlarge", ReplicaResources(32, 128, 4)),
        ("", ReplicaResources(2, 8, 0)),
        ("ml.weird", ReplicaResources(2, 8, 0)),
    ],
)
def test_instance_type_table(instance_type: str, expected: ReplicaResources) -> None:
    assert resources_for(instance_type) == expected


def test_actor_options_scaled() -> None:
    res = resources_for("ml.m5.large")
    assert res.actor_options(1.0, 1.0) == {"num_cpus": 2.0, "memory": float(8 * GIB)}
    assert res.actor_options(0.1, 0) == {"num_cpus": 0.2}
    assert resources_for("ml.g5.xlarge").actor_options(1, 0)["num_gpus"] == 1.0


def test_engine_urls() -> None:
    assert engine_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"


def test_bad_database_url_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable) as err:
        MetadataStore("nosuchdb://user:secret@host/db")
    assert "--database-url" in str(err.value) and "secret" not in str(err.value)


def test_serve_keeps_its_own_options_environment_variables() -> None:
    # The cluster options decorator must not drop the command's own Option metadata (a lost
    # MODELHOST_CREDENTIALS_FILE would start a server that authenticates nobody).
    import typer.main

    from modelhost import cli

    serve = typer.main.get_command(cli.app).commands["serve"]  # type: ignore[attr-defined]
    envvars = {p.name: p.envvar for p in serve.params}
    assert envvars["credentials_file"] == "MODELHOST_CREDENTIALS_FILE"
    assert envvars["allowed_hosts"] == "MODELHOST_ALLOWED_HOSTS"
    assert envvars["database_url"] == "MODELHOST_DB_URL"


def test_serve_workers_option() -> None:
    """--workers (MODELHOST_WORKERS): a count from 1 to 64; anything else a clear usage error naming it."""
    import typer.main
    from typer.testing import CliRunner

    from modelhost import cli

    serve = typer.main.get_command(cli.app).commands["serve"]  # type: ignore[attr-defined]
    assert {p.name: p.envvar for p in serve.params}["workers"] == "MODELHOST_WORKERS"
    for bad in ("0", "65", "two"):
        result = CliRunner().invoke(cli.app, ["serve", "--workers", bad])
        assert result.exit_code == 2, result.output
        assert "--workers" in result.output


def _plan(tmp_path: Path, model: dict) -> TransformPlan:
    return TransformPlan("job", {}, model, "m", JobLog(tmp_path / "logs", "job"))


def test_which_transform_jobs_run_on_ray_data(tmp_path: Path) -> None:
    single = {"PrimaryContainer": {"Image": "modelhost/python:latest", "ModelDataUrl": "s3://b/m.tar.gz"}}
    pipeline = {"Containers": [{"Image": "modelhost/python:latest"}, {"Image": "modelhost/python:latest"}]}
    with_s3 = make_settings(tmp_path, backend="ray", s3_endpoint_url="http://127.0.0.1:9000")
    assert runs_on_ray(with_s3, _plan(tmp_path, single)) is None
    assert "inference pipeline of 2 containers" in (runs_on_ray(with_s3, _plan(tmp_path, pipeline)) or "")
    no_s3 = make_settings(tmp_path, backend="ray")
    assert "--s3-endpoint-url" in (runs_on_ray(no_s3, _plan(tmp_path, single)) or "")


def test_batch_actors_answer_execution_parameters_as_the_worker() -> None:
    assert container_execution_parameters(worker_threads({})) == {
        "MaxConcurrentTransforms": 2,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }
    assert (
        container_execution_parameters(worker_threads({"MODELHOST_WORKER_THREADS": "3"}))["MaxConcurrentTransforms"]
        == 6
    )
