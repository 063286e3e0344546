"""``orchestrator decide STATE.json``: what the orchestrator would do, and why."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import click

from orchestrator.cli.core import analysis_json, print_analysis
from orchestrator.cli.inputs import check_runnable, read_config, read_state
from orchestrator.cli.llm_access import UnreachableModel, enter_llm
from orchestrator.cli.printable import printable
from orchestrator.composition import build_coordinator, resolve_target
from orchestrator.deciding.analysis import Analysis
from orchestrator.llm.protocol import ChatModel
from orchestrator.running.consistency import check_consistency
from state.config import Coordinator, WorkflowConfig
from state.decision import DecisionRecord
from state.errors import LLMError
from state.workflow import WorkflowState


async def _decide(
    state: WorkflowState,
    config: WorkflowConfig,
    base_url: str | None,
    model: str | None,
) -> tuple[Analysis, DecisionRecord, str | None]:
    """Decide on ``state``; the third value says why the LLM could not be opened, if so."""
    needs_llm = config.coordinator in (Coordinator.HYBRID, Coordinator.LLM, Coordinator.SCRIPT)
    probe = build_coordinator(None)
    analysis = probe.analyze(state, config)
    wants_llm = needs_llm and (
        config.coordinator is not Coordinator.HYBRID or analysis.route.value != "standard"
    )
    if not wants_llm:
        _, record = await probe.decide(state, config)
        return analysis, record, None
    target = resolve_target(config.llm, base_url=base_url, model=model)
    unreachable: str | None = None
    async with AsyncExitStack() as stack:
        chat: ChatModel
        try:
            chat = await enter_llm(stack, target, config.llm)
        except LLMError as exc:
            # Like a call that fails: the decision falls back, with this as its reason.
            unreachable = str(exc)
            chat = UnreachableModel(unreachable, target.model)
        coordinator = build_coordinator(chat)
        _, record = await coordinator.decide(state, config)
    return analysis, record, unreachable


@click.command()
@click.argument("state_file", metavar="STATE.json")
@click.option("--config", "config_file", metavar="CONFIG.yaml", help="workflow configuration")
@click.option(
    "--coordinator",
    type=click.Choice([c.value for c in Coordinator]),
    help="who decides (default: programmatic here, so nothing is called unless asked)",
)
@click.option("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)")
@click.option("--model", help="model name (default: OPENAI_MODEL, or the server's first)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def decide(
    state_file: str,
    config_file: str | None,
    coordinator: str | None,
    base_url: str | None,
    model: str | None,
    as_json: bool,
) -> None:
    """Show the route, signals, legal actions and decision for a state snapshot.

    Nothing is stored: this shows what the orchestrator would decide. With
    --coordinator hybrid|llm|script, the LLM is consulted where that mode consults it
    (OPENAI_BASE_URL/OPENAI_API_KEY, --base-url, or the embedded local model). An LLM
    that cannot be reached (or is not an OpenAI-compatible server) is treated like a call
    that fails: the decision falls back to the programmatic one, and the reason is shown.
    """
    state = read_state(state_file)
    config = read_config(config_file)
    config = config.model_copy(
        update={"coordinator": Coordinator(coordinator or Coordinator.PROGRAMMATIC.value)}
    )
    if config.coordinator is Coordinator.SCRIPT and not config.coordinator_script:
        raise click.UsageError("--coordinator script needs coordinator_script in --config")
    check_runnable(config)
    check_consistency(state, config)
    analysis, record, unreachable = asyncio.run(_decide(state, config, base_url, model))
    if as_json:
        out = analysis_json(analysis, record)
        if unreachable is not None:
            out["llm_unavailable"] = unreachable
        click.echo(json.dumps(out))
    else:
        print_analysis(analysis, record)
        if unreachable is not None:
            click.echo(f"llm unavailable: {printable(unreachable)}")
