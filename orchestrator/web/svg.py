"""Server-side SVG: the convergence chart and the state-machine diagram.

Drawn here from the data, not in the browser, so the console needs no chart or diagram
library and a test can read the numbers back from the markup (each point, threshold and
edge carries its values as ``data-`` attributes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from state.steps import GATE_OF_STATE, TERMINAL_STATES, MachineState

SOURCES = ("programmatic", "llm", "reconciled", "human")
_SOURCE_LETTER = {"programmatic": "P", "llm": "L", "reconciled": "R", "human": "H"}


@dataclass(frozen=True, slots=True)
class EdgeUse:
    """How many times one source took one edge of the machine."""

    source: MachineState
    dest: MachineState
    who: str
    count: int


# --- the convergence chart ---------------------------------------------------------------

# (metric, label, threshold key, the best direction, the axis top when values are small)
_PLAN_METRICS = (
    ("alignment", "alignment", "alignment", "min", 10.0),
    ("standardization", "standardization", "standardization", "min", 10.0),
    ("compatibility", "compatibility", "compatibility", "min", 10.0),
    ("critical_issues", "critical issues", "critical_issues", "max", 3.0),
)
_CODE_METRICS = (
    ("overall", "review score", "overall_for_tools", "min", 10.0),
    ("coverage", "line coverage %", "coverage", "min", 100.0),
    ("critical_issues", "critical issues", "critical_issues", "max", 3.0),
    ("minor_issues", "minor issues", "minor_issues", "max", 5.0),
)
_PW, _PH, _PAD = 200, 130, 28


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _panel(
    x0: int, y0: int, phase: int, metric: tuple[str, str, str, str, float], rounds: list[Any]
) -> list[str]:
    key, label, tkey, best, floor_top = metric
    values = [_num(r["scores"].get(key)) for r in rounds]
    threshold = _num(rounds[0]["thresholds"].get(tkey)) if rounds else None
    top = max([floor_top, threshold or 0.0, *[v for v in values if v is not None]])
    w, h = _PW - 2 * _PAD, _PH - 2 * _PAD

    def px(i: int) -> float:
        return x0 + _PAD + (w * i / (len(rounds) - 1) if len(rounds) > 1 else w / 2)

    def py(v: float) -> float:
        return y0 + _PAD + h - (h * v / top if top else 0)

    out = [
        f'<g class="panel" data-phase="{phase}" data-metric="{key}">',
        f'<rect x="{x0 + 2}" y="{y0 + 2}" width="{_PW - 4}" height="{_PH - 4}" rx="6" '
        'class="frame"/>',
        f'<text x="{x0 + _PAD}" y="{y0 + 18}" class="title">{escape(label)}</text>',
        f'<line x1="{x0 + _PAD}" y1="{py(0):.1f}" x2="{x0 + _PAD + w}" y2="{py(0):.1f}" '
        'class="axis"/>',
        f'<text x="{x0 + 4}" y="{py(top) + 4:.1f}" class="tick">{top:g}</text>',
        f'<text x="{x0 + 4}" y="{py(0) + 4:.1f}" class="tick">0</text>',
    ]
    if threshold is not None:
        word = "at least" if best == "min" else "at most"
        out.append(
            f'<line x1="{x0 + _PAD}" y1="{py(threshold):.1f}" x2="{x0 + _PAD + w}" '
            f'y2="{py(threshold):.1f}" class="threshold" data-value="{threshold:g}">'
            f"<title>threshold: {word} {threshold:g}</title></line>"
        )
    points = [(px(i), py(v), i, v) for i, v in enumerate(values) if v is not None]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        out.append(f'<polyline points="{path}" class="series"/>')
    for x, y, i, v in points:
        ok = threshold is None or (v >= threshold if best == "min" else v <= threshold)
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" class="point {"ok" if ok else "miss"}" '
            f'data-round="{i + 1}" data-value="{v:g}"><title>round {i + 1}: {v:g}</title>'
            "</circle>"
        )
    for i in range(len(rounds)):
        out.append(
            f'<text x="{px(i):.1f}" y="{y0 + _PH - 8}" class="tick" text-anchor="middle">'
            f"{i + 1}</text>"
        )
    out.append("</g>")
    return out


def render_chart(rounds: Sequence[dict[str, Any]]) -> str:
    """Each validation score per round against its threshold line, one row per phase.

    Args:
        rounds: ``orchestrator.reporting.validation_rounds`` of a workflow.
    """
    rows = [
        (1, "phase 1: plan validation", _PLAN_METRICS, [r for r in rounds if r["kind"] == "plan"]),
        (2, "phase 2: code validation", _CODE_METRICS, [r for r in rounds if r["kind"] == "code"]),
    ]
    rows = [row for row in rows if row[3]]
    width = _PW * 4
    if not rows:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="40" '
            f'viewBox="0 0 {width} 40"><text x="8" y="24" class="empty">'
            "no validation rounds yet</text></svg>"
        )
    height = len(rows) * (_PH + 24)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="convergence chart">'
    ]
    for n, (phase, title, metrics, phase_rounds) in enumerate(rows):
        y0 = n * (_PH + 24)
        out.append(
            f'<text x="4" y="{y0 + 16}" class="phase" data-phase="{phase}">{escape(title)} '
            f"({len(phase_rounds)} round{'s' if len(phase_rounds) != 1 else ''})</text>"
        )
        for i, metric in enumerate(metrics):
            out.extend(_panel(i * _PW, y0 + 20, phase, metric, phase_rounds))
    out.append("</svg>")
    return "\n".join(out)


# --- the state-machine diagram -----------------------------------------------------------

_COL, _ROW, _NW, _NH = 190, 78, 160, 40
_LAYOUT: dict[MachineState, tuple[int, int]] = {
    MachineState.NEW: (1, 0),
    MachineState.INITIAL_PLANNING: (1, 1),
    MachineState.PLAN_VALIDATION: (1, 2),
    MachineState.PLAN_REVISION: (2, 2),
    MachineState.AWAITING_PLAN_APPROVAL: (0, 3),
    MachineState.IMPLEMENTATION: (1, 4),
    MachineState.CODE_VALIDATION: (1, 5),
    MachineState.AWAITING_CODE_REVIEW: (0, 5),
    MachineState.CODE_REFINEMENT: (2, 6),
    MachineState.CONVERGENCE_VALIDATION: (1, 7),
    MachineState.AWAITING_FINAL_APPROVAL: (0, 8),
    MachineState.ESCALATED: (3, 4),
    MachineState.COMPLETED: (0, 9),
    MachineState.REJECTED: (1, 9),
    MachineState.FAILED: (2, 9),
}


def _centre(st: MachineState) -> tuple[float, float]:
    col, row = _LAYOUT[st]
    return 20 + col * _COL + _NW / 2, 20 + row * _ROW + _NH / 2


def _clip(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float]:
    """Where the segment from the centre (x1, y1) towards (x2, y2) leaves the node box."""
    dx, dy = x2 - x1, y2 - y1
    if dx == 0 and dy == 0:
        return x1, y1
    scale = min(
        (_NW / 2) / abs(dx) if dx else math.inf,
        (_NH / 2) / abs(dy) if dy else math.inf,
    )
    return x1 + dx * scale, y1 + dy * scale


def _edge_svg(src: MachineState, dest: MachineState, uses: dict[str, int], base: bool) -> list[str]:
    taken = sum(uses.values())
    cls = "edge taken" if taken else "edge"
    data = " ".join(f'data-{who}="{uses.get(who, 0)}"' for who in SOURCES)
    attrs = f'class="{cls}" data-from="{src.value}" data-to="{dest.value}" {data}'
    if not base:
        attrs += ' data-extra="1"'
    label = " ".join(f"{_SOURCE_LETTER[w]}{uses[w]}" for w in SOURCES if uses.get(w))
    width = 1.2 if not taken else min(2 + taken, 6)
    sx, sy = _centre(src)
    if src is dest:
        x, y = sx + _NW / 2, sy
        d = f"M{x:.1f},{y - 8:.1f} C{x + 34:.1f},{y - 26:.1f} {x + 34:.1f},{y + 26:.1f} "
        d += f"{x + 2:.1f},{y + 8:.1f}"
        lx, ly = x + 30, y + 4
    else:
        dx, dy = _centre(dest)
        # Opposite edges between the same two states are pulled apart.
        length = math.hypot(dx - sx, dy - sy) or 1.0
        ox, oy = -(dy - sy) / length * 6, (dx - sx) / length * 6
        x1, y1 = _clip(sx, sy, dx, dy)
        x2, y2 = _clip(dx, dy, sx, sy)
        d = f"M{x1 + ox:.1f},{y1 + oy:.1f} L{x2 + ox:.1f},{y2 + oy:.1f}"
        lx, ly = (x1 + x2) / 2 + ox * 2, (y1 + y2) / 2 + oy * 2
    title = f"{src.value} → {dest.value}" + (f": {label}" if label else ": not taken")
    out = [
        f"<g {attrs}><title>{escape(title)}</title>",
        f'<path d="{d}" stroke-width="{width:g}" marker-end="url(#arrow{"-t" if taken else ""})"/>',
    ]
    if label:
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" class="count">{escape(label)}</text>')
    out.append("</g>")
    return out


def render_diagram(
    edges: Iterable[tuple[MachineState, MachineState]],
    uses: Iterable[EdgeUse],
    *,
    current: MachineState,
) -> str:
    """The machine, the path a workflow took and, on each edge, who took it how often.

    Args:
        edges: the machine's edges to draw even when not taken.
        uses: the edges the workflow took, counted per source.
        current: the workflow's state now (highlighted).
    """
    base = set(edges)
    counts: dict[tuple[MachineState, MachineState], dict[str, int]] = {}
    for use in uses:
        per = counts.setdefault((use.source, use.dest), {})
        per[use.who] = per.get(use.who, 0) + use.count
    visited = {s for edge in counts for s in edge} | {current}
    width = 20 + 4 * _COL
    height = 20 + 10 * _ROW
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="state machine diagram">',
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="head"/></marker>',
        '<marker id="arrow-t" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" '
        'markerHeight="5" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="head-t"/></marker>',
        "</defs>",
    ]
    for src, dest in sorted(base | set(counts)):
        out.extend(_edge_svg(src, dest, counts.get((src, dest), {}), (src, dest) in base))
    for st, (col, row) in _LAYOUT.items():
        kind = "gate" if st in GATE_OF_STATE else "end" if st in TERMINAL_STATES else "step"
        cls = f"node {kind}" + (" visited" if st in visited else "")
        cls += " current" if st is current else ""
        x, y = 20 + col * _COL, 20 + row * _ROW
        out.append(
            f'<g class="{cls}" data-state="{st.value}"><rect x="{x}" y="{y}" width="{_NW}" '
            f'height="{_NH}" rx="{4 if kind == "step" else 16}"/>'
            f'<text x="{x + _NW / 2}" y="{y + _NH / 2 + 4}" text-anchor="middle">'
            f"{escape(st.value.replace('_', ' '))}</text></g>"
        )
    legend = " · ".join(f"{_SOURCE_LETTER[w]} {w}" for w in SOURCES)
    out.append(
        f'<text x="20" y="{height - 6}" class="legend">edge counts: {legend}. '
        "Fail and escalate edges appear once taken.</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
