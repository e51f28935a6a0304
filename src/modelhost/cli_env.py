"""`modelhost env`: the environment that points unmodified boto3, AWS CLI and sagemaker SDK code at a server."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from modelhost.client import DEFAULT_URL

err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the `env` command to the CLI."""

    @app.command("env")
    def client_env(
        url: Annotated[str, typer.Option("--url", envvar="MODELHOST_URL", help="The modelhost server.")] = DEFAULT_URL,
        shell: Annotated[str, typer.Option(help="Output syntax: sh, fish, powershell or dotenv.")] = "sh",
        dotenv: Annotated[bool, typer.Option("--dotenv", help="Same as --shell dotenv (a .env file).")] = False,
    ) -> None:
        """Print the environment that makes boto3, the AWS CLI and the sagemaker SDK use this server
        unchanged: eval "$(modelhost env)"."""
        from modelhost import client_env as ce

        chosen = "dotenv" if dotenv else shell
        if chosen not in ce.SHELLS:
            fail(f"--shell must be one of {', '.join(ce.SHELLS)}, not {chosen!r}")
        try:
            info = ce.server_info(url)
        except (OSError, ValueError, KeyError) as exc:
            fail(f"cannot read the client configuration of {url}: {exc}")
        env, warning = ce.variables(url, info, ce.local_sdk_config(url, info))
        if warning:
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
        sys.stdout.write(ce.render(env, chosen))
