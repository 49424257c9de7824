"""The benchmarks import p2gmed names inside their functions (so that `--help` stays fast); a name that moves
in the package would only fail when the benchmark runs. Check every such import resolves."""

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_p2gmed_import_of_a_benchmark_resolves(path):
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "p2gmed":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"from {node.module} import {alias.name} (line {node.lineno})")
    assert not missing, f"{path.name}: " + "; ".join(missing)
