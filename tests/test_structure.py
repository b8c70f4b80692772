"""The layout rules of docs/CONTRACTS.md, checked on the source so a change that breaks one fails here.

* no branch on a snapshot provider's name outside ``mlflow_anf/snapshots/`` (callers ask the provider's traits);
* no ``mlflow_anf.…`` tag key or ``mlflow-anf/…`` label key spelled outside ``mlflow_anf/vocabulary.py``
  (a string naming an importable module, ``mlflow_anf.x.y`` or ``mlflow_anf.x:attr``, is a module path, not a key);
* one routine follows Kubernetes objects (only ``mlflow_anf/k8s/follow.py`` opens a watch);
* sizes: modules up to 600 lines and functions up to 80, except where :data:`SIZE_EXCEPTIONS` says why.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PRODUCT = [REPO_ROOT / "mlflow_anf", REPO_ROOT / "project" / "mlflow_anf_lanedet"]
PROVIDER_NAMES = {"local", "csi", "anf"}
LABEL_KEY = re.compile(r"^mlflow-anf(\.io)?/[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")  # a label/annotation key of ours
MODULE_MAX_LINES = 600
FUNCTION_MAX_LINES = 80
#: path relative to the repository (module) or "path::function" -> why it is longer
SIZE_EXCEPTIONS: dict[str, str] = {}


def sources() -> list[Path]:
    return sorted(p for root in PRODUCT for p in root.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def docstring_nodes(module: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    out = set()
    for node in ast.walk(module):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_no_provider_name_comparison_outside_snapshots() -> None:
    found = []
    for path in sources():
        if (REPO_ROOT / "mlflow_anf" / "snapshots") in path.parents:
            continue
        for node in ast.walk(tree(path)):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            names = set()
            for operand in operands:
                if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                    names.add(operand.value)
                elif isinstance(operand, (ast.Tuple, ast.List, ast.Set)):
                    names |= {e.value for e in operand.elts if isinstance(e, ast.Constant)}
            # "local" is also an MLflow backend and env manager: only a comparison with a provider counts
            about_provider = any("provider" in ast.unparse(o) for o in operands if not isinstance(o, ast.Constant))
            if names & PROVIDER_NAMES and about_provider:
                found.append(f"{rel(path)}:{node.lineno}")
    assert not found, "compare a provider's traits, not its name: " + ", ".join(found)


def _is_module_path(value: str) -> bool:
    module = value.split(":", 1)[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_tag_and_label_keys_are_spelled_only_in_the_vocabulary() -> None:
    vocabulary = REPO_ROOT / "mlflow_anf" / "vocabulary.py"
    found = []
    for path in sources():
        if path == vocabulary:
            continue
        module = tree(path)
        docstrings = docstring_nodes(module)
        for node in ast.walk(module):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
                continue
            value = node.value
            if value.startswith("mlflow_anf.") and not _is_module_path(value):
                found.append(f"{rel(path)}:{node.lineno}: {value[:40]!r}")
            if LABEL_KEY.match(value):
                found.append(f"{rel(path)}:{node.lineno}: {value[:40]!r}")
    assert not found, "import the key from mlflow_anf.vocabulary: " + ", ".join(found)


def test_one_routine_watches_kubernetes_objects() -> None:
    follow = REPO_ROOT / "mlflow_anf" / "k8s" / "follow.py"
    assert follow.is_file()
    watchers = []
    for path in sources():
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Attribute) and node.attr == "Watch":
                watchers.append(rel(path))
            if isinstance(node, ast.ImportFrom) and node.module == "kubernetes" and any(
                    a.name == "watch" for a in node.names):
                watchers.append(rel(path))
    assert set(watchers) <= {rel(follow)}, f"watch only through mlflow_anf.k8s.follow, found in {sorted(watchers)}"


@pytest.mark.parametrize("path", sources(), ids=rel)
def test_module_and_function_sizes(path: Path) -> None:
    problems = []
    lines = len(path.read_text().splitlines())
    if lines > MODULE_MAX_LINES and rel(path) not in SIZE_EXCEPTIONS:
        problems.append(f"{rel(path)} has {lines} lines (> {MODULE_MAX_LINES})")
    for node in ast.walk(tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            key = f"{rel(path)}::{node.name}"
            if length > FUNCTION_MAX_LINES and key not in SIZE_EXCEPTIONS:
                problems.append(f"{key} has {length} lines (> {FUNCTION_MAX_LINES})")
    assert not problems, "; ".join(problems)


def test_size_exceptions_still_exist_and_give_a_reason() -> None:
    for key, why in SIZE_EXCEPTIONS.items():
        assert len(why) > 20, key
        path = REPO_ROOT / key.split("::", 1)[0]
        assert path.is_file(), key
