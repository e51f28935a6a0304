"""The CLI commands of export/: ``modelhost inspect``, ``modelhost export``, ``modelhost serve-model``
(registered on the main app by cli.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from botocore.exceptions import ClientError
from rich.console import Console

from modelhost.client import DEFAULT_URL

UrlOption = Annotated[str, typer.Option("--url", envvar="MODELHOST_URL", help="The modelhost server.")]


PANEL = "Models out of modelhost"
err = Console(stderr=True)
out = Console()


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # as the other commands
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the three commands to ``app`` (the main CLI), in their own help panel."""

    @app.command("inspect", rich_help_panel=PANEL)
    def inspect_artifact(
        artifact: Annotated[
            str, typer.Argument(help="A model.tar.gz or model directory, an s3:// URI, or a model name.")
        ],
        extract_to: Annotated[
            Path | None,
            typer.Option("--extract-to", help="Where to unpack an archive (default: a new temporary directory)."),
        ] = None,
        url: UrlOption = DEFAULT_URL,
    ) -> None:
        """What an artifact holds, the runtime it would use and why, and the Python that loads it.

        An archive is unpacked and kept (the printed snippet loads the model from there)."""
        from modelhost.export.commands import report, server_clients
        from modelhost.export.fetch import FetchError, resolve
        from modelhost.export.inspect import inspect_model

        sm, s3, _ = server_clients(url)
        if extract_to is not None:
            extract_to.mkdir(parents=True, exist_ok=True)
        work = extract_to or Path(tempfile.mkdtemp(prefix="modelhost-inspect-"))
        try:
            source = resolve(artifact, sm, s3, work)
        except FetchError as exc:
            fail(str(exc))
        finally:
            if extract_to is None and not any(work.iterdir()):
                work.rmdir()  # nothing was unpacked (a model directory is read in place)
        found = inspect_model(source.model_dir, source.image, source.environment)
        out.print(report(source.label, source.model_dir, found), highlight=False, markup=False, soft_wrap=True)

    @app.command("export", rich_help_panel=PANEL)
    def export_model(
        name: Annotated[str, typer.Argument(help="An endpoint or model name (or a model.tar.gz, an s3:// URI).")],
        to: Annotated[Path, typer.Option("--to", help="A new or empty directory to write.")],
        formats: Annotated[str, typer.Option("--format", help="Any of docker,kubernetes,ecs,compose.")] = (
            "docker,kubernetes,ecs,compose"
        ),
        registry: Annotated[str, typer.Option(help="Image registry prefix in the manifests (e.g. an ECR URI).")] = "",
        runtime: Annotated[str, typer.Option(help="The runtime, when the files do not tell it.")] = "",
        region: Annotated[str, typer.Option(help="Region for the ECS log configuration.")] = "us-east-1",
        url: UrlOption = DEFAULT_URL,
    ) -> None:
        """A self-contained directory that serves the model anywhere (no modelhost server)."""
        from modelhost.export.commands import server_clients, version
        from modelhost.export.fetch import FetchError
        from modelhost.export.plan import plan_for
        from modelhost.export.writer import ExportError, parse_formats, write_export

        sm, s3, autoscaling = server_clients(url)
        with tempfile.TemporaryDirectory(prefix="modelhost-export-") as work:
            try:
                chosen = parse_formats(formats)
                plan = plan_for(name, sm, s3, autoscaling, Path(work), runtime or None)
                written = write_export(plan, to, chosen, version(), registry, region)
            except (FetchError, ExportError) as exc:
                fail(str(exc))
            except ClientError as exc:
                e = exc.response.get("Error", {})
                fail(f"{e.get('Code')}: {e.get('Message')}")
        for path in written:
            out.print(str(path), highlight=False, soft_wrap=True)

    @app.command("serve-model", rich_help_panel=PANEL)
    def serve_model_command(
        path: Annotated[
            Path, typer.Argument(help="An export directory, an extracted model directory or a model.tar.gz.")
        ],
        host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port (SageMaker containers listen on 8080).")] = 8080,
        image: Annotated[str, typer.Option(help="The model's image URI, when the files do not tell the runtime.")] = "",
        runtime: Annotated[str, typer.Option(help="The runtime name (sklearn, xgboost, huggingface, ...).")] = "",
    ) -> None:
        """Serve one model behind the SageMaker container contract (GET /ping, POST /invocations)."""
        from modelhost.export.fetch import FetchError
        from modelhost.export.serve import locate, serve_model

        try:
            served = locate(path, image, runtime)
        except FetchError as exc:
            fail(str(exc))
        serve_model(served, host, port)
