"""Fail when a project module imports one that imports it back, directly or through others:
import-linter's layers hold between packages, not between the modules inside one."""

import sys

import grimp

PACKAGES = ("commands", "api", "worker", "jobs", "views", "store", "models", "core")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The groups of modules that reach each other through imports (Tarjan's components of
    more than one module), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return sorted(found, key=len, reverse=True)


def main() -> int:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    found = cycles(graph)
    for group in found:
        print("modules that import each other: " + ", ".join(group), file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
