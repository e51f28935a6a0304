"""The composition root: builds every service once, wires them, owns the lifespan; the HTTP side is
server.build.build_asgi (one port for the SageMaker control plane, runtime, S3 and STS)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from modelhost.backends.attachment import Attachment
from modelhost.backends.handle import Backend
from modelhost.backends.local import LocalBackend
from modelhost.backends.local.attached import LocalAttachment
from modelhost.config import Settings
from modelhost.control.context import ControlContext
from modelhost.controllers.async_sharing import AsyncSharing
from modelhost.controllers.autoscaler import Autoscaler
from modelhost.controllers.front_doors import FrontDoors
from modelhost.controllers.functions import FunctionController
from modelhost.controllers.leadership import lease_for
from modelhost.controllers.loop import ControlLoop, Wakeup
from modelhost.controllers.monitoring import MonitoringScheduler
from modelhost.controllers.processing import ProcessingSupervisor
from modelhost.controllers.reconciler import Reconciler
from modelhost.controllers.route_sharing import RoutePublisher, RouteRefresher
from modelhost.controllers.serverless import ServerlessScaler
from modelhost.controllers.traffic_sharing import TrafficCollector, TrafficReporter
from modelhost.controllers.transforms import TransformSupervisor
from modelhost.hosting.asyncq import AsyncInference
from modelhost.hosting.capture import DataCapture
from modelhost.hosting.functions import FunctionInvoker
from modelhost.hosting.router import Router
from modelhost.hosting.serverless import ServerlessBackend
from modelhost.server.build import build_asgi
from modelhost.server.front_door import FrontDoor
from modelhost.store.artifacts import ArtifactCache, max_artifact_bytes
from modelhost.store.blobs import BlobStore
from modelhost.store.blobs_local import LocalBlobStore
from modelhost.store.blobs_remote import RemoteBlobStore
from modelhost.store.buckets import BucketStore
from modelhost.store.db import DatabaseUnavailable, MetadataStore, secure_data_dir
from modelhost.store.multipart import MultipartUploads
from modelhost.store.remote_s3 import RemoteS3

log = logging.getLogger("modelhost.server")


def cluster_backend(settings: Settings, artifacts: ArtifactCache) -> Backend:
    """``--backend``: local instance processes (default) or Ray Serve replicas (issue 16, backends/ray/)."""
    if settings.backend == "ray":
        from modelhost.backends.ray import RayBackend

        return RayBackend(settings, artifacts)
    return LocalBackend(settings, artifacts)


def attachment_for(settings: Settings) -> Attachment:
    """How front doors of this backend reach the leader's replicas (backends/attachment.py)."""
    if settings.backend == "ray":
        from modelhost.backends.ray.attached import RayAttachment

        return RayAttachment(settings)
    return LocalAttachment(settings.data_dir)


class Services:
    """Everything the routes share, built at startup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        secure_data_dir(settings.data_dir)  # umask 077, data dir 0700: before anything is created in it
        self.store = MetadataStore(settings.db_url)
        remote = (
            RemoteS3(settings.s3_endpoint_url, settings.data_dir / "s3-mirror", settings.region)
            if settings.s3_endpoint_url
            else None
        )
        self.buckets = BucketStore(settings.buckets_dir, settings.data_dir)
        # One blob store serves every s3:// URI: the configured S3 service, else the embedded bucket store.
        self.blobs: BlobStore = (
            RemoteBlobStore(remote, settings.data_dir / "s3-staging")
            if remote is not None
            else LocalBlobStore(self.buckets)
        )
        self.artifacts = ArtifactCache(
            self.blobs,
            settings.model_cache_dir,
            settings.allowed_model_dirs,
            max_artifact_bytes(settings.max_artifact_bytes, None),
        )
        # Data capture: the router (and the async queue) offer each answered request; written in the background.
        self.capture = DataCapture(self.blobs, settings.capture_flush_interval, settings.capture_buffer_bytes)
        self.router = Router(settings.instance_wait_timeout, capture=self.capture)
        # Serverless variants (and Lambda functions) get the serverless gate around the local fleets.
        self.backend = ServerlessBackend(
            cluster_backend(settings, self.artifacts),
            idle_seconds=settings.serverless_idle_seconds,
            cold_start_limit=settings.serverless_cold_start_limit,
        )
        self.serverless = ServerlessScaler(self.backend)
        # Lambda functions: deployed by the control loop as serverless fleets, invoked through this table.
        self.functions = FunctionInvoker()
        self.function_controller = FunctionController(settings, self.store, self.backend, self.functions)
        self.reconciler = Reconciler(settings, self.store, self.backend, self.router)
        # Asynchronous inference: the durable queue; the control loop tells it which endpoints are async.
        self.asyncq = AsyncInference(settings, self.store, self.blobs, self.router)
        # Batch transform jobs: runs InProgress jobs (and resumes them after a restart).
        self.transforms = TransformSupervisor(settings, self.store, self.blobs, self.artifacts)
        wakeup = Wakeup()  # every control-plane change asks the control loop for a pass
        self.control = ControlContext(settings, self.store, self.blobs, wake=wakeup, running=self.reconciler.running)
        self.autoscaler = Autoscaler(
            self.control, self.reconciler.running, settings.autoscale_window, backlog=self.asyncq.backlog
        )
        # Front doors sharing this database (serve --workers, or servers on several machines): the one
        # holding the lease runs the control loop; the others route to its replicas (controllers/front_doors.py).
        self.async_sharing = AsyncSharing(self.asyncq)
        attachment = attachment_for(settings)
        refresher = RouteRefresher(self.store, self.router, attachment, self.reconciler.running, settings.logs_dir)
        self.doors = FrontDoors(
            lease_for(settings.db_url),
            RoutePublisher(self.store, self.router, attachment, self.reconciler.running),
            refresher,
            traffic=(TrafficReporter(self.store, refresher), TrafficCollector(self.store, self.router)),
            on_promote=(self.async_sharing.promote,),
            follower_watchers=(self.async_sharing.follower_pass, self.capture.sync_endpoints),
        )
        self.loop = ControlLoop(
            self.store,
            self.reconciler,
            self.transforms,
            self.autoscaler,
            tick=settings.reconcile_interval,
            autoscale_interval=settings.autoscale_interval,
            endpoint_watchers=(
                self.asyncq.sync_endpoints,
                self.serverless.on_pass,
                self.function_controller.on_pass,
                self.capture.sync_endpoints,
                self.async_sharing.leader_pass,
                self.doors.leader_pass,
            ),
            wakeup=wakeup,
            # Model Monitor: schedules start executions, which are processing jobs.
            supervisors=(
                MonitoringScheduler(self.control),
                ProcessingSupervisor(settings, self.store, self.blobs),
            ),
            doors=self.doors,
        )

    async def start(self) -> None:
        await self.async_sharing.start_accepting()  # the dispatcher starts when this front door leads
        await self.capture.start()
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.shutdown()
        await self.function_controller.shutdown()
        await self.asyncq.stop()
        await self.capture.stop()  # flush what was captured
        await self.backend.close()


def create_app(settings: Settings) -> FrontDoor:
    services = Services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    return build_asgi(
        settings,
        control=services.control,
        router=services.router,
        asyncq=services.asyncq,
        buckets=services.buckets,
        uploads=MultipartUploads(services.buckets, settings.data_dir / "uploads"),
        lifespan=lifespan,
        functions=services.functions,
    )


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers <= 1:
        _serve_one(settings)
        return
    from modelhost.workers import Workers, reuse_port_socket

    # Before the workers: the database reachable and migrated once, the port free (the workers bind it too).
    try:
        MetadataStore(settings.db_url).engine.dispose()
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    reuse_port_socket(settings.host, settings.port).close()
    raise SystemExit(Workers(settings.workers, lambda: _serve_one(settings, reuse_port=True)).serve())


def _serve_one(settings: Settings, reuse_port: bool = False) -> None:
    import uvicorn

    from modelhost.server.middleware.connections import guarded_protocol
    from modelhost.server.middleware.limits import Limits
    from modelhost.workers import reuse_port_socket

    try:
        asgi = create_app(settings)
    except DatabaseUnavailable as exc:  # a bad or unreachable --database-url: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    config = uvicorn.Config(
        asgi,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools + connection / header limits, and InvokeEndpoint's fast path (server/fast_path.py)
        http=guarded_protocol(Limits.from_settings(settings), asgi.fast_path),
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,  # nothing is proxied to us: a loopback client may not rewrite its own address
    )
    # --workers: each worker listens on its own SO_REUSEPORT socket of the address (modelhost/workers.py).
    uvicorn.Server(config).run(sockets=[reuse_port_socket(settings.host, settings.port)] if reuse_port else None)
