"""The contract is used on both sides: outside study/contract.py (and study/verdicts.py for the verdict's
evidence keys), no code in study/ or scripts/ spells a tag key, a table name, a derived param, an
evidence key or an MLflow `tags.` query as a literal: it uses the names of study/contract.py."""

import ast
import re
from pathlib import Path

from study import contract, verdicts
from study.schema import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
QUERY = re.compile(r"(^|\band\s+)tags\.")
# a string that is also a config key (the preset's `question`) names the config key there
CONFIG_KEYS = set(SCHEMA) | {k.rsplit(".", 1)[-1] for k in SCHEMA}
TAG_KEYS = set(contract.TAGS) - CONFIG_KEYS
TABLE_NAMES = set(contract.TABLES) | set(contract.REPORT_TABLES.values())
PARQUET = {contract.parquet(t) for t in TABLE_NAMES}
EVIDENCE = {*verdicts.EVIDENCE, verdicts.FIRST_NONFINITE, verdicts.GRAD_NOISE}


def _strings(node) -> list[str]:
    return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def literals(path: Path, evidence_home: bool) -> list[str]:
    """`line: what 'literal'` for every contract name spelled as a literal in this file."""
    found, tree = [], ast.parse(path.read_text())
    exported = {  # a package's `__all__` lists names of functions, not tag keys
        id(c)
        for a in ast.walk(tree)
        if isinstance(a, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in a.targets)
        for c in ast.walk(a.value)
    }
    for node in ast.walk(tree):
        if id(node) in exported:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            s = node.value
            if QUERY.search(s):
                found.append(f"{node.lineno}: query {s!r}")
            elif s in TAG_KEYS:
                found.append(f"{node.lineno}: tag key {s!r}")
            elif s in PARQUET:
                found.append(f"{node.lineno}: table file {s!r}")
            elif s in contract.DERIVED_PARAMS:
                found.append(f"{node.lineno}: derived param {s!r}")
            elif s in EVIDENCE and not evidence_home:
                found.append(f"{node.lineno}: evidence key {s!r}")
        # table names: several spelled together (a hand-kept list of the tables), or indexing tables
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(set(_strings(node)) & TABLE_NAMES) >= 2:
            found.append(f"{node.lineno}: table names {sorted(set(_strings(node)) & TABLE_NAMES)}")
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if len(keys & TABLE_NAMES) >= 2:
                found.append(f"{node.lineno}: table names as keys {sorted(keys & TABLE_NAMES)}")
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value in TABLE_NAMES
            and "table" in ast.unparse(node.value).lower()
        ):
            found.append(f"{node.lineno}: table {node.slice.value!r}")
    return found


def test_no_contract_name_is_spelled_outside_the_contract():
    files = [*(ROOT / "study").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    spelled = {
        str(p.relative_to(ROOT)): found
        for p in files
        if p.name != "contract.py" and (found := literals(p, evidence_home=p.name == "verdicts.py"))
    }
    assert not spelled, f"use the names of study/contract.py (or study/verdicts.py) instead: {spelled}"


def test_the_check_finds_each_kind_of_literal(tmp_path):
    """The check is not blind: each kind of hand-spelled name in a file is found."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "c.search_runs(ids, \"tags.role = 'cell'\")\n"
        "tags = {'outcome': 'killed', 'pid': '1'}\n"
        "df.to_parquet('steps.parquet')\n"
        "names = ('epochs', 'signal')\n"
        "x = tables['histograms']\n"
        "p = params['data.num_classes']\n"
        "r = row['diag/progress']\n"
    )
    found = literals(bad, evidence_home=False)
    kinds = {re.match(r"\d+: ([a-z ]+?) ['\"\[]", line).group(1) for line in found}
    assert kinds == {"query", "tag key", "table file", "table names", "table", "derived param", "evidence key"}, found
    assert len(found) == 8, found  # outcome and pid both
