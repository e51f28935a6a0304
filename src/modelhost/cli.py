"""The command line: serve, deploy, invoke, ls, delete, logs, transform, env.

Every command except ``serve`` talks to a running server through the SageMaker API (boto3), so
it does exactly what any other SageMaker client could do.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Table

from modelhost import cli_cluster as cluster
from modelhost.cli_env import register as register_env
from modelhost.client import DEFAULT_URL, boto_session, clients, signed_get
from modelhost.export.cli import register as register_export

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SageMaker-compatible model hosting.")
register_export(app)  # inspect, export, serve-model (modelhost/export/cli.py)
register_env(app)  # env (modelhost/cli_env.py)
err = Console(stderr=True)
out = Console()

UrlOption = Annotated[str, typer.Option("--url", envvar="MODELHOST_URL", help="The modelhost server.")]


def fail(message: str) -> NoReturn:
    # soft_wrap: one line whatever the terminal width (rich wraps at 80 columns when not a tty).
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _call(fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except ClientError as exc:
        e = exc.response.get("Error", {})
        fail(f"{e.get('Code')}: {e.get('Message')}")
    except BotoCoreError as exc:
        fail(str(exc))


@app.command()
@cluster.options
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for both the control plane and the runtime.")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="Metadata, bucket store, model cache and logs.")] = Path("./mh-data"),
    region: Annotated[str, typer.Option(help="Region used in ARNs.")] = "us-east-1",
    account_id: Annotated[str, typer.Option(help="Account id used in ARNs.")] = "123456789012",
    example: Annotated[bool, typer.Option(help="Deploy the example diabetes endpoint once the server is up.")] = False,
    credentials_file: Annotated[
        str,
        typer.Option(
            envvar="MODELHOST_CREDENTIALS_FILE",
            help="AWS shared-credentials file of the accepted keys (with optional 'permissions' lines): "
            "every request must then be signed by one of them.",
        ),
    ] = "",
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host without --credentials-file (anyone can do anything).")
    ] = False,
    allowed_hosts: Annotated[
        str, typer.Option(envvar="MODELHOST_ALLOWED_HOSTS", help="More Host names to serve (a,*.b.com; '*': any).")
    ] = "",
) -> None:
    """Run the server (SQLite metadata and the local bucket store under --data-dir)."""
    from modelhost.app import serve as run_server
    from modelhost.config import Settings
    from modelhost.server import startup

    settings = Settings(
        data_dir=data_dir.resolve(),
        host=host,
        port=port,
        region=region,
        account_id=account_id,
        credentials_file=credentials_file,
        allowed_hosts=allowed_hosts,
    )
    try:
        err.print(startup.authentication_notice(settings, insecure), highlight=False, soft_wrap=True)
    except startup.RefusedToStart as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if example:
        from modelhost.examples import deploy_example_in_background

        deploy_example_in_background(settings)
    err.print(f"modelhost listening on http://{host}:{port} (data in {settings.data_dir})", highlight=False)
    # issue 14: the one line that points unmodified AWS code here (a wildcard bind is reached on loopback)
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    err.print(
        f'modelhost: for unmodified AWS code: eval "$(modelhost env --url http://{reach}:{port})"',
        highlight=False,
        soft_wrap=True,
    )
    run_server(settings)


DEPLOY_BUCKET = "modelhost-deploy"


def _model_data_url(artifact: str, name: str, url: str) -> str:
    """An s3:// URI as is; a local model.tar.gz or model directory is uploaded to the server's S3
    (``s3://modelhost-deploy/<name>/model.tar.gz``), so it works on any server, signed or not."""
    if "://" in artifact:
        return artifact
    path = Path(artifact).expanduser().resolve()
    if not path.exists():
        fail(f"{artifact} does not exist")
    s3 = boto_session().client("s3", endpoint_url=url)
    try:
        s3.head_bucket(Bucket=DEPLOY_BUCKET)
    except ClientError:
        _call(s3.create_bucket, Bucket=DEPLOY_BUCKET)
    key = f"{name}/model.tar.gz"
    with tempfile.TemporaryDirectory() as tmp:
        archive = path
        if path.is_dir():
            archive = Path(tmp) / "model.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                for child in sorted(path.iterdir()):
                    tar.add(child, arcname=child.name)
        _call(s3.upload_file, Filename=str(archive), Bucket=DEPLOY_BUCKET, Key=key)
    return f"s3://{DEPLOY_BUCKET}/{key}"


@app.command()
def deploy(
    artifact: Annotated[str, typer.Argument(help="model.tar.gz, a model directory, or an s3:// URI.")],
    name: Annotated[str, typer.Option("--name", help="Name of the model, config and endpoint.")],
    instances: Annotated[int, typer.Option(help="Instance count.")] = 1,
    image: Annotated[str | None, typer.Option(help="Image URI (default: detected from the artifact).")] = None,
    instance_type: Annotated[str, typer.Option(help="Instance type recorded in the config.")] = "ml.m5.large",
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for the model (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for InService.")] = True,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Create a model, an endpoint config and an endpoint, and wait until it is InService."""
    sm, _ = clients(url)
    model_data = _model_data_url(artifact, name, url)
    if image is None:
        image = _detect_image(artifact)
    environment = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--env expects KEY=VALUE, got {item!r}")
        environment[key] = value
    container: dict[str, Any] = {"Image": image, "ModelDataUrl": model_data}
    if environment:
        container["Environment"] = environment
    _call(
        sm.create_model,
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/modelhost",
        PrimaryContainer=container,
    )
    _call(
        sm.create_endpoint_config,
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": instances,
                "InstanceType": instance_type,
            }
        ],
    )
    _call(sm.create_endpoint, EndpointName=name, EndpointConfigName=name)
    if not wait:
        out.print(f"endpoint {name}: Creating")
        return
    started = time.monotonic()
    with err.status(f"waiting for endpoint {name} to be InService") as status:
        while True:
            desc = _call(sm.describe_endpoint, EndpointName=name)
            state = desc["EndpointStatus"]
            status.update(f"endpoint {name}: {state} ({time.monotonic() - started:.1f}s)")
            if state == "InService":
                break
            if state == "Failed":
                fail(f"endpoint {name} failed: {desc.get('FailureReason', 'no reason given')}")
            time.sleep(0.25)
    out.print(f"endpoint {name}: InService in {time.monotonic() - started:.1f}s")
    out.print(f"  modelhost invoke {name} --content-type text/csv --body '...'", highlight=False)


def _detect_image(artifact: str) -> str:
    from modelhost.serving.images import detect_runtime

    path = Path(artifact)
    if path.is_dir():
        runtime = detect_runtime(path)
        if runtime:
            return f"modelhost/{runtime}"
    elif path.is_file():
        import tarfile
        import tempfile

        with tempfile.TemporaryDirectory() as tmp, tarfile.open(path) as tar:
            names = [m for m in tar.getmembers() if m.isfile() and m.size < 1 << 20 or m.name.endswith(".py")]
            for m in names:
                (Path(tmp) / m.name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / m.name).touch()
            runtime = detect_runtime(Path(tmp))
            if runtime:
                return f"modelhost/{runtime}"
    fail("cannot tell the framework of this artifact; pass --image (e.g. modelhost/sklearn)")


@app.command()
def invoke(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    content_type: Annotated[str, typer.Option(help="Request content type.")] = "application/json",
    accept: Annotated[str | None, typer.Option(help="Accept header.")] = None,
    body: Annotated[str | None, typer.Option(help="Request body.")] = None,
    file: Annotated[Path | None, typer.Option(help="Read the request body from a file ('-' for stdin).")] = None,
    target_variant: Annotated[str | None, typer.Option(help="Send to this variant.")] = None,
    async_: Annotated[
        bool,
        typer.Option("--async", help="InvokeEndpointAsync: upload the body, wait for the result, print it."),
    ] = False,
    wait: Annotated[float, typer.Option(help="With --async: seconds to wait for the result.")] = 3600,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Invoke an endpoint and print the response body."""
    if (body is None) == (file is None):
        fail("give exactly one of --body or --file")
    data = body.encode() if body is not None else (sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes())  # type: ignore[union-attr]
    if async_:
        _invoke_async(name, data, content_type, accept, wait, url)
        return
    _, rt = clients(url)
    kwargs: dict[str, Any] = {"EndpointName": name, "ContentType": content_type, "Body": data}
    if accept:
        kwargs["Accept"] = accept
    if target_variant:
        kwargs["TargetVariant"] = target_variant
    resp = _call(rt.invoke_endpoint, **kwargs)
    sys.stdout.buffer.write(resp["Body"].read())
    sys.stdout.buffer.write(b"\n")


ASYNC_INPUT_BUCKET = "modelhost-async-inputs"


def _invoke_async(name: str, data: bytes, content_type: str, accept: str | None, wait: float, url: str) -> None:
    """Upload the body, InvokeEndpointAsync with its InputLocation, poll the output and failure
    locations (with a progress line on stderr), then print the result or fail with the error."""
    import uuid

    _, rt = clients(url)
    s3 = boto_session().client("s3", endpoint_url=url)
    try:
        s3.head_bucket(Bucket=ASYNC_INPUT_BUCKET)
    except ClientError:
        _call(s3.create_bucket, Bucket=ASYNC_INPUT_BUCKET)
    key = f"{name}/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"
    _call(s3.put_object, Bucket=ASYNC_INPUT_BUCKET, Key=key, Body=data)
    kwargs: dict[str, Any] = {
        "EndpointName": name,
        "ContentType": content_type,
        "InputLocation": f"s3://{ASYNC_INPUT_BUCKET}/{key}",
    }
    if accept:
        kwargs["Accept"] = accept
    resp = _call(rt.invoke_endpoint_async, **kwargs)
    locations = [("output", resp["OutputLocation"])]
    if resp.get("FailureLocation"):
        locations.append(("failure", resp["FailureLocation"]))
    err.print(f"queued {resp['InferenceId']}; output: {resp['OutputLocation']}", highlight=False, soft_wrap=True)
    started = time.monotonic()
    with err.status("waiting for the result") as status:
        while True:
            for kind, uri in locations:
                bucket, _, obj = uri.removeprefix("s3://").partition("/")
                try:
                    got = s3.get_object(Bucket=bucket, Key=obj)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                        continue
                    fail(f"{exc.response['Error'].get('Code')}: {exc.response['Error'].get('Message')}")
                result = got["Body"].read()
                if kind == "failure":
                    fail(f"the request failed: {result.decode('utf-8', 'replace')}")
                sys.stdout.buffer.write(result)
                sys.stdout.buffer.write(b"\n")
                return
            elapsed = time.monotonic() - started
            if elapsed > wait:
                fail(f"no result after {wait:g}s; it will appear at {resp['OutputLocation']}")
            status.update(f"waiting for the result ({elapsed:.0f}s)")
            time.sleep(0.25)


@app.command("ls")
def list_resources(url: UrlOption = DEFAULT_URL) -> None:
    """List models, endpoint configs and endpoints."""
    sm, _ = clients(url)
    for title, op, key, cols in (
        ("Models", "list_models", "Models", ("ModelName", "CreationTime")),
        ("Endpoint configs", "list_endpoint_configs", "EndpointConfigs", ("EndpointConfigName", "CreationTime")),
        ("Endpoints", "list_endpoints", "Endpoints", ("EndpointName", "EndpointStatus", "CreationTime")),
    ):
        table = Table(title=title, title_justify="left")
        for c in cols:
            table.add_column(c)
        try:
            for page in sm.get_paginator(op).paginate():
                for item in page[key]:
                    table.add_row(*(str(item.get(c, "")) for c in cols))
        except (ClientError, BotoCoreError) as exc:
            fail(str(exc))
        out.print(table)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    keep_config: Annotated[bool, typer.Option(help="Keep the endpoint config and model of the same name.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Delete an endpoint (and, when they share its name, its config and model)."""
    sm, _ = clients(url)
    _call(sm.delete_endpoint, EndpointName=name)
    if not keep_config:
        for fn, kwargs in (
            (sm.delete_endpoint_config, {"EndpointConfigName": name}),
            (sm.delete_model, {"ModelName": name}),
        ):
            try:
                fn(**kwargs)
            except ClientError:
                pass  # not created by `deploy`; nothing to clean up
    out.print(f"endpoint {name}: Deleting")


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Endpoint name (or function name with --function).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    function: Annotated[bool, typer.Option("--function", help="NAME is a Lambda function.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Print an endpoint's (or a Lambda function's) logs: its instances' output and the platform's lines."""
    offset = 0
    kind = "functions" if function else "endpoints"
    while True:
        target = f"{url.rstrip('/')}/modelhost/{kind}/{urllib.parse.quote(name)}/logs?offset={offset}"
        try:
            with urllib.request.urlopen(signed_get(target), timeout=10) as resp:
                data = resp.read()
                offset = int(resp.headers.get("X-Modelhost-Next-Offset", offset + len(data)))
        except urllib.error.HTTPError as exc:
            fail(exc.read().decode().strip() or str(exc))
        except urllib.error.URLError as exc:
            fail(f"cannot reach {url}: {exc.reason}")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if not follow:
            return
        time.sleep(0.5)


@app.command()
def transform(
    model: Annotated[str, typer.Argument(help="Model name (created with `deploy` or CreateModel).")],
    input_uri: Annotated[str, typer.Argument(metavar="INPUT", help="s3:// prefix (or object) to transform.")],
    output_uri: Annotated[str, typer.Argument(metavar="OUTPUT", help="S3OutputPath for the .out objects.")],
    name: Annotated[str | None, typer.Option(help="Job name (default: <model>-<timestamp>).")] = None,
    content_type: Annotated[str | None, typer.Option(help="TransformInput.ContentType, e.g. text/csv.")] = None,
    split_type: Annotated[str, typer.Option(help="None, Line, RecordIO or TFRecord.")] = "Line",
    strategy: Annotated[str | None, typer.Option(help="MultiRecord or SingleRecord.")] = None,
    accept: Annotated[str | None, typer.Option(help="TransformOutput.Accept.")] = None,
    assemble_with: Annotated[str, typer.Option(help="Line or None.")] = "Line",
    instance_count: Annotated[int, typer.Option(help="Instances of the model.")] = 1,
    max_payload: Annotated[int | None, typer.Option(help="MaxPayloadInMB.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="MaxConcurrentTransforms per instance.")] = None,
    gzip_input: Annotated[bool, typer.Option("--gzip", help="The input objects are gzip-compressed.")] = False,
    manifest: Annotated[bool, typer.Option(help="INPUT is a manifest file.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Show progress until the job ends.")] = True,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Run a batch transform job; shows objects and records done, records/s and an ETA."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from modelhost.jobs.progress import describe_with_progress

    sm, _ = clients(url)
    job_name = name or f"{model}-{time.strftime('%Y-%m-%d-%H-%M-%S')}"[:63]
    tin: dict[str, Any] = {
        "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile" if manifest else "S3Prefix", "S3Uri": input_uri}},
        "SplitType": split_type,
        "CompressionType": "Gzip" if gzip_input else "None",
    }
    if content_type:
        tin["ContentType"] = content_type
    tout: dict[str, Any] = {"S3OutputPath": output_uri, "AssembleWith": assemble_with}
    if accept:
        tout["Accept"] = accept
    extra: dict[str, Any] = {}
    if strategy:
        extra["BatchStrategy"] = strategy
    if max_payload is not None:
        extra["MaxPayloadInMB"] = max_payload
    if max_concurrent is not None:
        extra["MaxConcurrentTransforms"] = max_concurrent
    _call(
        sm.create_transform_job,
        TransformJobName=job_name,
        ModelName=model,
        TransformInput=tin,
        TransformOutput=tout,
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": instance_count},
        **extra,
    )
    out.print(f"transform job {job_name}: InProgress", highlight=False)
    if not wait:
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[objects]} objects"),
        TextColumn("{task.fields[records]} records"),
        TextColumn("{task.fields[rate]} rec/s"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(job_name, total=None, objects="0/?", records="0", rate="-", eta="-")
        while True:
            try:
                desc, p = describe_with_progress(sm, job_name)
            except (ClientError, BotoCoreError) as exc:
                fail(str(exc))
            status = desc["TransformJobStatus"]
            total, done = p.get("BytesTotal") or 0, p.get("BytesProcessed") or 0
            finished = p.get("ObjectsCompleted", 0) + p.get("ObjectsFailed", 0)
            rate = p.get("RecordsPerSecond") or 0.0
            elapsed = p.get("ElapsedSeconds") or 0.0
            eta = "-"
            if total and done and status == "InProgress":
                eta = f"{max(elapsed * (total - done) / done, 0):.0f}s"
            bar.update(
                task,
                total=total or None,
                completed=done,
                objects=f"{finished}/{p.get('ObjectsTotal', '?')}",
                records=f"{p.get('RecordsProcessed', 0):,}",
                rate=f"{rate:,.0f}",
                eta=eta,
            )
            if status in ("Completed", "Failed", "Stopped"):
                break
            time.sleep(0.5)
    if status != "Completed":
        reason = f": {desc['FailureReason']}" if desc.get("FailureReason") else ""
        fail(f"transform job {job_name}: {status}{reason}")
    out.print(f"transform job {job_name}: Completed; output under {output_uri}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
