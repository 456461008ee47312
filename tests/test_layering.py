"""The layering of ../shared/ARCHITECTURE.md, and no import cycles inside swarm/."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("bot", "swarm", "memory", "schedules")
SDKS = ("slack_bolt", "slack_sdk", "discord")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, TYPE_CHECKING blocks and function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def modules(package: str) -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / package).rglob("*.py")}


def test_swarm_has_no_import_cycles() -> None:
    mods = modules("swarm")
    graph = {name: {m for m in imports(path) if m in mods and m != name and m != "swarm"}
             for name, path in mods.items()}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph[name]):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                done.add(dep)
                visit(dep, path + [dep], done)

    for name in sorted(graph):
        visit(name, [name], {name})
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# swarm/'s packages, each importing only those before it (and the shared top-level modules)
SWARM_ORDER = ("store", "llm", "agents", "engine", "services")


def test_swarm_packages_import_only_the_ones_below_them() -> None:
    wrong = []
    for i, package in enumerate(SWARM_ORDER):
        later = SWARM_ORDER[i + 1:]
        for name, path in modules(f"swarm/{package}").items():
            wrong += [f"{name} imports {m}" for m in imports(path)
                      if m.split(".")[:2] in (["swarm", p] for p in later)]
    shared = {name: path for name, path in modules("swarm").items()
              if name.count(".") == 1 and path.name != "__init__.py"}
    for name, path in shared.items():  # contract, config, states, events...: below them all
        wrong += [f"{name} imports {m}" for m in imports(path)
                  if m.split(".")[:2] in (["swarm", p] for p in SWARM_ORDER)]
    assert wrong == []


def test_each_layer_imports_only_what_it_may() -> None:
    allowed = {"memory": set(), "swarm": {"memory"}, "schedules": {"swarm", "memory"}}
    wrong = []
    for package, may in allowed.items():
        for name, path in modules(package).items():
            for module in imports(path):
                top = module.split(".")[0]
                if (top in OURS and top != package and top not in may) or top in SDKS:
                    wrong.append(f"{name} imports {module}")
    assert wrong == []



def test_each_platform_sdk_is_imported_only_in_its_own_folder() -> None:
    homes = {"slack_bolt": "bot.slack", "slack_sdk": "bot.slack", "discord": "bot.discord"}
    wrong = []
    for package in OURS:
        for name, path in modules(package).items():
            for module in imports(path):
                home = homes.get(module.split(".")[0])
                if home is not None and not (name == home or name.startswith(home + ".")):
                    wrong.append(f"{name} imports {module}")
    assert wrong == []


def test_the_scheduler_library_is_used_only_in_schedules() -> None:
    """APScheduler is the schedules' business: the swarm and the edges reach it through them."""
    wrong = [f"{name} imports {module}" for package in ("swarm", "bot", "memory")
             for name, path in modules(package).items() for module in imports(path)
             if module.split(".")[0] == "apscheduler"]
    assert wrong == []
    assert any(m.split(".")[0] == "apscheduler" for path in modules("schedules").values()
               for m in imports(path))
