"""Settings: data dir, bind address, identity (region/account) and limits.

Every setting can come from the command line or from a ``MODELHOST_*`` environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"MODELHOST_{name}", default)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("DATA_DIR", "./mh-data")).resolve())
    host: str = field(default_factory=lambda: _env("HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("PORT", "8080")))
    region: str = field(default_factory=lambda: _env("REGION", "us-east-1"))
    account_id: str = field(default_factory=lambda: _env("ACCOUNT_ID", "123456789012"))
    # serve --workers: front-door processes on the one port (modelhost/workers.py).
    workers: int = field(default_factory=lambda: int(_env("WORKERS", "1")))
    # How often the reconciler re-checks every endpoint even without an event (seconds).
    reconcile_interval: float = field(default_factory=lambda: float(_env("RECONCILE_INTERVAL", "2")))
    # How often instance health is probed with /ping (seconds).
    ping_interval: float = field(default_factory=lambda: float(_env("PING_INTERVAL", "5")))
    # Startup window when the variant does not set ContainerStartupHealthCheckTimeoutInSeconds.
    default_startup_timeout: float = field(default_factory=lambda: float(_env("STARTUP_TIMEOUT", "240")))
    # How long a request waits for a healthy instance (an instance restarting after a crash).
    instance_wait_timeout: float = field(default_factory=lambda: float(_env("INSTANCE_WAIT_TIMEOUT", "10")))
    # Seconds between SIGTERM and SIGKILL when an instance is stopped (SageMaker: 30).
    stop_grace: float = field(default_factory=lambda: float(_env("STOP_GRACE", "30")))
    # Autoscaling: seconds between evaluations, and the metric window (CloudWatch: 1-minute periods).
    autoscale_interval: float = field(default_factory=lambda: float(_env("AUTOSCALE_INTERVAL", "10")))
    autoscale_window: float = field(default_factory=lambda: float(_env("AUTOSCALE_WINDOW", "60")))
    # A real S3-compatible service for s3:// artifacts and outputs (empty: the embedded bucket store).
    s3_endpoint_url: str = field(default_factory=lambda: _env("S3_ENDPOINT_URL", ""))
    # Python interpreter for instance processes (the server's own by default).
    python: str = field(default_factory=lambda: _env("PYTHON", ""))
    # Asynchronous inference: where SNS-ARN topics are published (moto, LocalStack; empty: boto3's default).
    sns_endpoint_url: str = field(default_factory=lambda: _env("SNS_ENDPOINT_URL", ""))
    # Signature verification (security/): the AWS shared-credentials file of the accepted keys
    # (empty: requests are not authenticated, and the server binds to loopback only).
    credentials_file: str = field(default_factory=lambda: _env("CREDENTIALS_FILE", ""))
    # Front-door limits (server/middleware/). Host names accepted besides loopback and the bind
    # address (comma list; "*.example.com" for subdomains; "*" for any).
    allowed_hosts: str = field(default_factory=lambda: _env("ALLOWED_HOSTS", ""))
    # Open connections per client address; past it a request is answered 503.
    max_connections_per_client: int = field(default_factory=lambda: int(_env("MAX_CONNECTIONS_PER_CLIENT", "256")))
    # Seconds a request body may stall (no bytes arriving) before the request is cut off.
    body_timeout: float = field(default_factory=lambda: float(_env("BODY_TIMEOUT", "60")))
    # Isolation (issue 10). Local model directories besides the data dir (os.pathsep-separated).
    allowed_model_dirs_env: str = field(default_factory=lambda: _env("ALLOWED_MODEL_DIRS", ""))
    # Extracted bytes per artifact (0: 10 x the variant's VolumeSizeInGB, else 30 GiB).
    max_artifact_bytes: int = field(default_factory=lambda: int(_env("MAX_ARTIFACT_BYTES", "0")))
    # Instances over all endpoints (0: from the machine, control/endpoints.py default_max_instances).
    max_instances: int = field(default_factory=lambda: int(_env("MAX_INSTANCES", "0")))
    # Webhook hosts / URL prefixes allowed on loopback and private addresses (comma list).
    webhook_allow: str = field(default_factory=lambda: _env("WEBHOOK_ALLOW", ""))
    # Data capture (hosting/capture/): seconds between flushes of captured records into objects (at most
    # this much is lost on a crash), and the bytes buffered before new records are dropped (counted).
    capture_flush_interval: float = field(default_factory=lambda: float(_env("CAPTURE_FLUSH_INTERVAL", "1")))
    capture_buffer_bytes: int = field(default_factory=lambda: int(_env("CAPTURE_BUFFER_BYTES", str(64 << 20))))
    # Run instance processes as this unprivileged user when the server runs as root.
    instance_user: str = field(default_factory=lambda: _env("INSTANCE_USER", ""))
    # code/requirements.txt may name local paths outside the model (pip --isolated either way).
    requirements_allow_local: bool = field(
        default_factory=lambda: _env("REQUIREMENTS_ALLOW_LOCAL", "").lower() in ("1", "true", "yes")
    )
    # Unmodified clients (issue 14): the IAM role STS and IAM answer for (get_execution_role()), and how
    # long a Describe* of a resource in a transitional state waits for it to change (seconds; 0: never).
    role_name: str = field(default_factory=lambda: _env("ROLE_NAME", "modelhost"))
    describe_wait: float = field(default_factory=lambda: float(_env("DESCRIBE_WAIT", "20")))

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.role_name}"

    # Serverless endpoints and Lambda functions (issue 11): seconds without requests before a variant
    # scales to zero (to its ProvisionedConcurrency), and the cold-start limit (SageMaker: 3 minutes).
    serverless_idle_seconds: float = field(default_factory=lambda: float(_env("SERVERLESS_IDLE_SECONDS", "300")))
    serverless_cold_start_limit: float = field(
        default_factory=lambda: float(_env("SERVERLESS_COLD_START_LIMIT", "180"))
    )

    # The key Lambda functions get (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, with AWS_ENDPOINT_URL
    # pointing here): with --credentials-file, name a key of that file.
    lambda_access_key_id: str = field(default_factory=lambda: _env("LAMBDA_ACCESS_KEY_ID", "modelhost"))
    lambda_secret_access_key: str = field(default_factory=lambda: _env("LAMBDA_SECRET_ACCESS_KEY", "modelhost"))

    # Cluster (issue 16): the metadata database as a SQLAlchemy URL (empty: SQLite under the data dir),
    # the backend replicas run on ("local" processes or "ray" Serve deployments) and the Ray cluster.
    database_url: str = field(default_factory=lambda: _env("DB_URL", ""))
    backend: str = field(default_factory=lambda: _env("BACKEND", "local"))
    ray_address: str = field(default_factory=lambda: _env("RAY_ADDRESS", os.environ.get("RAY_ADDRESS", "auto")))
    # Ray CPUs reserved per vCPU of the InstanceType, and the share of its memory reserved (backends/ray/sizing.py).
    ray_cpus_per_vcpu: float = field(default_factory=lambda: float(_env("RAY_CPUS_PER_VCPU", "1")))
    ray_memory_share: float = field(default_factory=lambda: float(_env("RAY_MEMORY_SHARE", "1")))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'modelhost.db'}"

    @property
    def buckets_dir(self) -> Path:
        return self.data_dir / "buckets"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "model-cache"

    @property
    def requirements_dir(self) -> Path:
        # code/requirements.txt installs, one directory per file content hash.
        return self.data_dir / "requirements"

    @property
    def hf_cache_dir(self) -> Path:
        # Hugging Face Hub downloads (HF_MODEL_ID), shared by every instance.
        return self.data_dir / "hf-cache"

    @property
    def async_dir(self) -> Path:
        # Asynchronous inference: inline request bodies and responses being committed.
        return self.data_dir / "async"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        # Unix sockets have a ~107 byte path limit, so they live in a short per-server dir.
        return self.data_dir / "run"

    @property
    def allowed_model_dirs(self) -> tuple[Path, ...]:
        """The data dir, then MODELHOST_ALLOWED_MODEL_DIRS, symlinks resolved."""
        extra = [Path(p).expanduser() for p in self.allowed_model_dirs_env.split(os.pathsep) if p.strip()]
        return tuple(Path(os.path.realpath(p)) for p in (self.data_dir, *extra))

    def arn(self, resource: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:{resource}/{name.lower()}"
