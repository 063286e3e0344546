"""``orchestrator serve``: the web console and HTTP API over the workflow store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from orchestrator.cli.options import data_dir_option, open_store, resolve_data_dir


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@data_dir_option
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="access tokens, one NAME:TOKEN per line (also: ORCHESTRATOR_WEB_TOKENS="
    "NAME:TOKEN,...); required unless --host is a loopback address",
)
@click.option(
    "--webhook",
    multiple=True,
    envvar="ORCHESTRATOR_WEBHOOKS",
    help="post when a workflow waits at a gate: URL (JSON) or slack:URL; repeatable "
    "[env: ORCHESTRATOR_WEBHOOKS, space-separated]",
)
@click.option(
    "--public-url",
    help="the console's address as others reach it, for links in webhooks "
    "(default: http://HOST:PORT)",
)
@click.option(
    "--no-run",
    is_flag=True,
    help="record answers and new workflows only; run them with orchestrator resume",
)
@click.option("--base-url", help="LLM endpoint for the workflows the console runs")
@click.option("--model", help="model for the workflows the console runs")
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    token_file: Path | None,
    webhook: tuple[str, ...],
    public_url: str | None,
    no_run: bool,
    base_url: str | None,
    model: str | None,
) -> None:
    """Serve the web console: inbox, workflows, decisions, charts, answers."""
    # Imported here so every other command starts without loading the web stack.
    from orchestrator.web.access import AccessPolicy, parse_tokens, read_token_file  # noqa: PLC0415
    from orchestrator.web.app import create_app  # noqa: PLC0415
    from orchestrator.web.notify import Notifier, parse_webhook  # noqa: PLC0415
    from orchestrator.web.server import ConsoleServer  # noqa: PLC0415
    from orchestrator.web.service import build_service  # noqa: PLC0415

    tokens = read_token_file(token_file) if token_file else {}
    env_tokens = os.environ.get("ORCHESTRATOR_WEB_TOKENS", "")
    if env_tokens.strip():
        tokens |= parse_tokens(env_tokens, "ORCHESTRATOR_WEB_TOKENS")
    policy = AccessPolicy(host=host, tokens=tokens)  # refuses an open non-loopback bind
    hooks = tuple(parse_webhook(w) for w in webhook)
    service = build_service(
        resolve_data_dir(data_dir),
        store=open_store(data_dir),  # --store URL / ORCHESTRATOR_STORE, as every command
        run_workflows=not no_run,
        base_url=base_url,
        model=model,
    )
    shown = f"[{host}]" if ":" in host else host
    url = public_url or f"http://{shown}:{port}"
    app = create_app(service, policy, notifier=Notifier(hooks) if hooks else None, public_url=url)
    access = "open (loopback)" if policy.open else f"{len(tokens)} token(s)"
    click.echo(f"console at {url}/ ({access}); Ctrl-C stops it", err=True)
    server = ConsoleServer(app, host=host, port=port)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn exits with 3 itself when it cannot listen (the port is taken, say) or the
    # console fails to start; this is a stop that came before it was listening.
    if not server.started:
        raise SystemExit(3)
