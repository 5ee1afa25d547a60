"""Imports inside `study/` flow one way: no cycle, counting imports inside functions."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "study"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def study_imports() -> dict[str, set[str]]:
    """module -> the study modules it imports anywhere in its body."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module if node.level == 0 else ".".join(name.split(".")[: -node.level] + [node.module])
                deps.add(base)
                deps |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name and d != "study"}
    return graph


def test_no_import_cycle_in_study():
    graph = study_imports()
    assert "study.callbacks" in graph["study.train"] and "study.config" in graph["study.sweep"]
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, node, dep])
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_every_name_of_the_contract_is_documented_in_recorded_md():
    """docs/recorded.md is the one list of recorded names (README points to it)."""
    from study import contract

    text = (ROOT.parent / "docs" / "recorded.md").read_text()
    section = text[: text.index("### The statistics")]
    names = [*contract.TAGS, *contract.ROLES, *contract.OUTCOMES, *contract.ARTIFACTS]
    names += [f"{g}/L/" for g in contract.METRIC_GROUPS] + [f"{g}/" for g in contract.MODEL_GROUPS]
    missing = [n for n in names if f"`{n}" not in section and f"={n}`" not in section]
    assert not missing, f"docs/recorded.md 'Runs, params, tags, metrics, artifacts' lacks {missing}"


def test_readme_is_a_manual():
    """README lines fit 120 characters; commit hashes belong in reports, not in the manual."""
    import re

    text = (ROOT.parent / "README.md").read_text()
    long = [i for i, line in enumerate(text.splitlines(), 1) if len(line) > 120]
    assert not long, f"README lines over 120 characters: {long}"
    words = set(re.findall(r"(?<![\w/-])[0-9a-f]{7,40}(?![\w-])", text))
    hashes = sorted(w for w in words if re.search("[a-f]", w) and re.search("[0-9]", w))
    assert not hashes, f"README names commits {hashes}: move them to reports/benchmarks/README.md"
