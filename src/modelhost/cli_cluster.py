"""``modelhost serve`` options for running on a cluster (issue 16), added to the command by a decorator
so cli.py stays short: each value is handed to Settings through its ``MODELHOST_*`` variable."""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

BACKENDS = ("local", "ray")
OPTIONS: dict[str, tuple[str, Any, Any]] = {  # parameter -> (variable, annotation, default)
    "database_url": (
        "MODELHOST_DB_URL",
        Annotated[
            str,
            typer.Option(
                envvar="MODELHOST_DB_URL",
                help="Metadata database as a SQLAlchemy URL (postgresql://user@host/db); default SQLite in --data-dir.",
            ),
        ],
        "",
    ),
    "backend": (
        "MODELHOST_BACKEND",
        Annotated[
            str,
            typer.Option(
                envvar="MODELHOST_BACKEND",
                help="Where replicas run: local processes or a Ray cluster (at RAY_ADDRESS).",
            ),
        ],
        "local",
    ),
    "s3_endpoint_url": (
        "MODELHOST_S3_ENDPOINT_URL",
        Annotated[
            str,
            typer.Option(envvar="MODELHOST_S3_ENDPOINT_URL", help="An S3-compatible service behind every s3:// URI."),
        ],
        "",
    ),
    "workers": (
        "MODELHOST_WORKERS",
        Annotated[
            int,
            typer.Option(
                envvar="MODELHOST_WORKERS",
                help="Front-door processes sharing the port, fed by one control loop (for machines with more cores).",
            ),
        ],
        1,
    ),
}


def options(fn: Callable[..., None]) -> Callable[..., None]:
    """Add --database-url, --backend, --s3-endpoint-url and --workers to a command."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> None:
        for name, (variable, _, _) in OPTIONS.items():
            value = kwargs.pop(name)
            if name == "backend" and value not in BACKENDS:
                raise typer.BadParameter(f"must be one of {', '.join(BACKENDS)}, not {value!r}", param_hint="--backend")
            if name == "workers" and not 1 <= value <= 64:
                raise typer.BadParameter(f"must be between 1 and 64, not {value}", param_hint="--workers")
            if value:
                os.environ[variable] = str(value)
        fn(*args, **kwargs)

    # The command's own annotations resolved here (they are strings under `from __future__ import annotations`,
    # which typer would otherwise evaluate in this module and lose their Option metadata, envvars included).
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()]
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (_, annotation, default) in OPTIONS.items()
    ]
    command.__signature__ = sig.replace(parameters=[*own, *extra], return_annotation=None)  # type: ignore[attr-defined]
    return command
