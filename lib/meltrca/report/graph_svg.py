"""The dependency graph as inline SVG, laid out in layers by call depth (no graphviz binary).

Layout (Sugiyama-style, small graphs): cycles are broken by dropping DFS back edges, each service
goes to the layer of its longest call path from an entry service (callers left, callees right), and
a few barycenter sweeps order each layer to cut crossings. Nodes carry ``data-service`` and
``data-role`` (root-cause, suspect, affected, other) so the page and its tests can find them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape

from meltrca.report.model import Edge

NODE_H = 30
HGAP = 70
VGAP = 14
PAD = 16
MAX_LABEL = 30
ROLE_STYLE = {
    "root-cause": ("#d62728", "#7f0000", "#ffffff"),
    "suspect": ("#ff9f40", "#a65400", "#1a1a1a"),
    "affected": ("#ffe08a", "#b38f00", "#1a1a1a"),
    "other": ("#eef1f5", "#9aa5b1", "#33414e"),
}


def break_cycles(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Successor lists without DFS back edges (and self loops): an acyclic graph for layering."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    has_pred: set[str] = set()
    for a, b in edges:
        if b not in succ[a]:
            succ[a].append(b)
        if a != b:
            has_pred.add(b)
    for n in succ:
        succ[n].sort()
    dag: dict[str, list[str]] = {n: [] for n in nodes}
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    roots = [n for n in nodes if n not in has_pred] + [n for n in nodes if n in has_pred]
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            for m in it:
                if state.get(m) == 1:
                    continue  # back edge: closes a cycle
                dag[n].append(m)
                if m not in state:
                    state[m] = 1
                    stack.append((m, iter(succ[m])))
                    break
            else:
                state[n] = 2
                stack.pop()
    return dag


def layered_layout(nodes: Iterable[str], edges: Iterable[tuple[str, str]], *, sweeps: int = 4) -> list[list[str]]:
    """Layers (left to right) of ordered services: callers before callees."""
    edge_list = [(str(a), str(b)) for a, b in edges]
    names = sorted(set(nodes) | {n for e in edge_list for n in e})
    dag = break_cycles(names, edge_list)
    preds: dict[str, list[str]] = {n: [] for n in names}
    for a, outs in dag.items():
        for b in outs:
            preds[b].append(a)
    layer: dict[str, int] = {}
    indeg = {n: len(preds[n]) for n in names}
    ready = sorted(n for n in names if indeg[n] == 0)
    while ready:
        n = ready.pop(0)
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
        for m in dag[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in names:
        layers[layer[n]].append(n)
    neighbours_before = {n: preds[n] for n in names}
    neighbours_after = {n: dag[n] for n in names}
    for _ in range(sweeps):
        _order_by_barycenter(layers, neighbours_before, range(1, len(layers)))
        _order_by_barycenter(layers, neighbours_after, range(len(layers) - 2, -1, -1))
    return layers


def _order_by_barycenter(layers: list[list[str]], neighbours: Mapping[str, list[str]], order: Iterable[int]) -> None:
    """Sort each layer by the mean relative position of its neighbours (no neighbours: stay put)."""
    for i in order:
        pos = {n: (j + 0.5) / len(layer) for layer in layers for j, n in enumerate(layer)}
        keys = {}
        for n in layers[i]:
            ps = [pos[m] for m in neighbours[n]]
            keys[n] = (sum(ps) / len(ps) if ps else pos[n], n)
        layers[i].sort(key=keys.__getitem__)


def focus(edges: Sequence[Edge], keep: Iterable[str], max_nodes: int) -> tuple[list[str], list[Edge], str | None]:
    """All services when the graph is small; else the incident's services and their direct neighbours."""
    keep_set = set(keep)
    nodes = sorted({e.src for e in edges} | {e.dst for e in edges} | keep_set)
    if len(nodes) <= max_nodes:
        return nodes, list(edges), None
    near = keep_set | {e.dst for e in edges if e.src in keep_set} | {e.src for e in edges if e.dst in keep_set}
    chosen = near if len(near) <= max_nodes else keep_set
    sub = [e for e in edges if e.src in chosen and e.dst in chosen]
    what = "incident services and their direct neighbours" if chosen is near else "incident services only"
    return sorted(chosen), sub, f"showing {len(chosen)} of {len(nodes)} services ({what})"


def graph_svg(
    nodes: Sequence[str],
    edges: Sequence[Edge],
    roles: Mapping[str, str],
    *,
    ranks: Mapping[str, int] | None = None,
    uid: str = "g",
    title: str = "",
) -> str:
    """Inline SVG of the call graph; `roles` maps a service to root-cause / suspect / affected."""
    ranks = ranks or {}
    layers = layered_layout(nodes, [(e.src, e.dst) for e in edges])
    labels = {n: _label(n, ranks.get(n)) for layer in layers for n in layer}
    node_w = min(max((len(t) for t in labels.values()), default=8) * 7 + 24, MAX_LABEL * 7 + 24)
    node_w = max(node_w, 90)
    tallest = max((len(layer) for layer in layers), default=1)
    xy: dict[str, tuple[float, float]] = {}
    for i, layer in enumerate(layers):
        offset = (tallest - len(layer)) * (NODE_H + VGAP) / 2
        for j, n in enumerate(layer):
            xy[n] = (PAD + i * (node_w + HGAP), PAD + offset + j * (NODE_H + VGAP))
    width = PAD * 2 + max(len(layers), 1) * (node_w + HGAP) - HGAP
    height = PAD * 2 + tallest * (NODE_H + VGAP) - VGAP + 40
    uid = "".join(ch if ch.isalnum() else "-" for ch in uid)
    parts = [
        f'<svg class="service-graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}"'
        f' viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(title or "service dependency graph")}">',
        "<defs>",
        *(
            f'<marker id="arrow-{uid}-{k}" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9"'
            f' orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
            for k, c in (("n", "#8a96a3"), ("e", "#d62728"), ("h", "#33414e"))
        ),
        "</defs>",
    ]
    for e in edges:
        if e.src not in xy or e.dst not in xy:
            continue
        parts.append(_edge_svg(e, xy, node_w, uid, roles))
    for n, (x, y) in xy.items():
        role = roles.get(n, "other")
        fill, stroke, ink = ROLE_STYLE.get(role, ROLE_STYLE["other"])
        sw = 3 if role == "root-cause" else 1.2
        weight = ' font-weight="bold"' if role in ("root-cause", "suspect") else ""
        parts.append(
            f'<g class="node {role}" data-service="{escape(n)}" data-role="{role}">'
            f"<title>{escape(n)}{' — ' + role.replace('-', ' ') if role != 'other' else ''}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{node_w}" height="{NODE_H}" rx="6" fill="{fill}"'
            f' stroke="{stroke}" stroke-width="{sw}"/>'
            f'<text x="{x + node_w / 2:.1f}" y="{y + NODE_H / 2 + 4:.1f}" text-anchor="middle" font-size="12"'
            f' font-family="sans-serif" fill="{ink}"{weight}>{escape(labels[n])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _label(name: str, rank: int | None) -> str:
    text = name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"
    return f"#{rank} {text}" if rank else text


def _edge_svg(e: Edge, xy: Mapping[str, tuple[float, float]], node_w: float, uid: str, roles: Mapping[str, str]) -> str:
    (x1, y1), (x2, y2) = xy[e.src], xy[e.dst]
    failing = (e.error_ratio or 0.0) >= 0.05
    hot = e.src in roles and e.dst in roles
    color, kind = ("#d62728", "e") if failing else (("#33414e", "h") if hot else ("#8a96a3", "n"))
    width = 1.0 + min(math.log10(max(e.calls or 1, 1)), 4) * 0.5
    if x2 > x1:  # forward: right side of the caller to left side of the callee
        sx, sy, tx, ty = x1 + node_w, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
        dx = (tx - sx) / 2
        d = f"M{sx:.1f},{sy:.1f} C{sx + dx:.1f},{sy:.1f} {tx - dx:.1f},{ty:.1f} {tx:.1f},{ty:.1f}"
    else:  # back edge or same layer (cycles): an arc below the nodes
        sx, sy, tx, ty = x1 + node_w / 2, y1 + NODE_H, x2 + node_w / 2, y2 + NODE_H
        drop = max(sy, ty) + 30
        d = f"M{sx:.1f},{sy:.1f} C{sx:.1f},{drop:.1f} {tx:.1f},{drop:.1f} {tx:.1f},{ty:.1f}"
    tip = f"{e.src} → {e.dst}"
    if e.calls is not None:
        tip += f": {e.calls:,} calls"
    if e.error_ratio is not None:
        tip += f", {e.error_ratio:.1%} errors"
    if e.p95_ms is not None:
        tip += f", p95 {e.p95_ms:.0f} ms"
    return (
        f'<path class="edge{" failing" if failing else ""}" data-src="{escape(e.src)}" data-dst="{escape(e.dst)}"'
        f' d="{d}" fill="none" stroke="{color}" stroke-width="{width:.1f}" marker-end="url(#arrow-{uid}-{kind})">'
        f"<title>{escape(tip)}</title></path>"
    )
