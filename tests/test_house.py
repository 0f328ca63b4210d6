"""The package's shape: its imports flow one way (a DAG), none hides inside a function."""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxfit"
# Optional extras may be imported where they are used (the torch reference needs torch).
LAZY_ALLOWED = {"jaxfit.experiments.torch_reference"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def jaxfit_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported jaxfit module, whether the import sits inside a function) for every import of
    the file, `if TYPE_CHECKING:` blocks left out (they never run)."""
    found: list[tuple[str, bool]] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
            package = module_name(path).split(".")
            package = package if path.name == "__init__.py" else package[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.extend((t, in_function) for t in targets(child) if t == "jaxfit" or t.startswith("jaxfit."))
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    walk(ast.parse(path.read_text()), False)
    return found


def test_no_jaxfit_module_is_imported_inside_a_function():
    hidden = [
        f"{name} imports {target} inside a function"
        for name, path in MODULES.items()
        for target, in_function in jaxfit_imports(path)
        if in_function and target not in LAZY_ALLOWED
    ]
    assert not hidden, hidden


def test_the_import_graph_has_no_cycle():
    graph = {name: {t for t, _ in jaxfit_imports(path) if t != name} for name, path in MODULES.items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_the_checker_sees_a_cycle_and_a_hidden_import(tmp_path, monkeypatch):
    """The two tests above fail where they should: on a planted cycle and a function-level import."""
    fake = tmp_path / "jaxfit"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("from jaxfit import b\n")
    (fake / "b.py").write_text("def f():\n    from jaxfit import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    modules = {module_name(p): p for p in sorted(fake.rglob("*.py"))}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", modules)
    assert jaxfit_imports(fake / "b.py") == [("jaxfit.a", True)]
    graph = {name: {t for t, _ in jaxfit_imports(path) if t != name} for name, path in modules.items()}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


@pytest.mark.slow
def test_the_report_of_a_run_folder_imports_no_jax(tmp_path, stepfit_run):
    """`python -m jaxfit.report DIR` redraws from the files alone: jax, flax, optax and orbax
    are never imported (`python -X importtime` lists every module imported)."""
    import shutil
    import subprocess

    out = tmp_path / "run"
    shutil.copytree(stepfit_run, out)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "jaxfit.report", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"jaxfit.runfiles", "jaxfit.plots", "matplotlib"} <= imported  # the listing is whole (report runs as __main__)
    heavy = sorted(m for m in imported if m.split(".")[0] in {"jax", "jaxlib", "flax", "optax", "orbax"})
    assert not heavy, heavy
    assert "# stepfit" in (out / "summary.md").read_text()
