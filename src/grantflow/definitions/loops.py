"""Loops in a workflow: which steps form one, and how many passes each step of a loop may make.

A loop (steps that can reach each other through `next` and branches) must have at least one
step declaring `max_iterations` (the publish gate refuses it otherwise). That number bounds the
whole loop: every step of the loop may run that many times, so the step that declares it and
the steps it loops through (a call, the condition that decides to go round again) agree. A step
of the loop with its own `max_iterations` keeps its own; when several steps of one loop declare
a bound, the others take the largest. A step outside any loop runs once.

The engine (both its paths) and the dry-run read the bounds from here, so they stop a loop at
the same pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """How many passes a step may make, and the step whose `max_iterations` says so."""

    limit: int
    declared_by: str | None  # None: a step outside any loop (one pass)

    def exceeded(self, step_id: str, iteration: int) -> str:
        """The sentence for a step about to make pass `iteration`, over this bound."""
        where = (
            "its own max_iterations"
            if self.declared_by == step_id
            else f"max_iterations on step {self.declared_by!r}"
            if self.declared_by
            else "it is not part of a declared loop"
        )
        return (
            f"step {step_id!r} would run a {ordinal(iteration)} time, over its loop's bound "
            f"of {self.limit} ({where})"
        )


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 22nd, 101st."""
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def cycles(edges: Mapping[str, Iterable[str | None]]) -> list[list[str]]:
    """Strongly connected components with a loop (Tarjan), each in a stable order."""
    graph = {node: [t for t in targets if t is not None] for node, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in graph:
                continue  # a missing step: the gate reports it
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1 or node in graph[node]:
                order = list(graph)
                found.append(sorted(component, key=order.index))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def bounds(
    edges: Mapping[str, Iterable[str | None]], declared: Mapping[str, int | None]
) -> dict[str, Bound]:
    """Every step's bound, from the graph (`edges`: step id -> the steps it may lead to) and
    each step's own `max_iterations` (`declared`)."""
    result = {
        step: Bound(limit, step) if limit else Bound(1, None) for step, limit in declared.items()
    }
    for loop in cycles(edges):
        declaring = [(declared[s], s) for s in loop if declared.get(s)]
        if not declaring:
            continue  # refused by the gate; a stored plan keeps one pass per step
        limit, by = max(declaring, key=lambda d: (d[0] or 0, -loop.index(d[1])))
        for step in loop:
            if not declared.get(step):
                result[step] = Bound(limit or 1, by)
    return result
