"""Rendering the workflow machine as Mermaid or Graphviz DOT.

Every edge of the machine is drawn with its trigger and guards, so the two loops (plan
revision, code refinement), the gates and the escalation paths are visible. The edges by
which an answered escalation resumes the interrupted state are summarised as one edge per
destination, since they mirror the forward edges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from orchestrator.deciding.machine import TransitionSpec
from state.steps import GATE_OF_STATE, STEP_OF_STATE, TERMINAL_STATES, MachineState


def _label(spec: TransitionSpec) -> str:
    guards = " & ".join(g.__name__ for g in spec.guards if not g.__name__.startswith("from_"))
    return f"{spec.trigger} [{guards}]" if guards else spec.trigger


def _edges(table: Iterable[TransitionSpec]) -> list[tuple[MachineState, MachineState, str]]:
    out: list[tuple[MachineState, MachineState, str]] = []
    resumed: dict[MachineState, set[str]] = defaultdict(set)
    for spec in table:
        if spec.continuation and spec.guards and spec.guards[1].__name__.startswith("from_"):
            resumed[spec.dest].add(spec.trigger)
            continue
        if spec.trigger == "escalate" and spec.source is not MachineState.NEW:
            continue  # drawn once, from a note, below
        out.append((spec.source, spec.dest, _label(spec)))
    for dest, triggers in resumed.items():
        out.append(
            (
                MachineState.ESCALATED,
                dest,
                f"{' | '.join(sorted(triggers))} [human_continues & resumes here]",
            )
        )
    return out


def _display(st: MachineState) -> str:
    step = STEP_OF_STATE.get(st)
    if step is not None:
        return f"step {int(step)}: {st.value}"
    gate = GATE_OF_STATE.get(st)
    if gate is not None:
        return f"gate {gate.value}: {st.value}"
    return st.value


def to_mermaid(table: Iterable[TransitionSpec]) -> str:
    """A Mermaid ``stateDiagram-v2`` of the machine."""
    lines = ["stateDiagram-v2", "    direction TB"]
    for st in MachineState:
        lines.append(f'    state "{_display(st)}" as {st.value}')
    lines.append(f"    [*] --> {MachineState.NEW.value}")
    for src, dest, label in _edges(table):
        lines.append(f"    {src.value} --> {dest.value}: {label}")
    for st in sorted(TERMINAL_STATES):
        lines.append(f"    {st.value} --> [*]")
    lines.append(
        "    note right of escalated\n"
        "        every non-terminal state can escalate here;\n"
        "        a human answer resumes the interrupted state with fresh budgets\n"
        "    end note"
    )
    return "\n".join(lines) + "\n"


def to_dot(table: Iterable[TransitionSpec]) -> str:
    """A Graphviz DOT digraph of the machine (gates as octagons, terminals doubled)."""
    lines = ["digraph workflow {", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    for st in MachineState:
        shape = ""
        if st in GATE_OF_STATE:
            shape = ", shape=octagon"
        elif st in TERMINAL_STATES:
            shape = ", shape=doublecircle"
        lines.append(f'  {st.value} [label="{_display(st)}"{shape}];')
    for src, dest, label in _edges(table):
        style = ", style=dashed" if "retry" in label or dest is MachineState.ESCALATED else ""
        lines.append(f'  {src.value} -> {dest.value} [label="{label}"{style}];')
    lines.append('  escalate_note [shape=note, label="every non-terminal state can escalate"];')
    lines.append("  escalate_note -> escalated [style=dotted];")
    lines.append("}")
    return "\n".join(lines) + "\n"
