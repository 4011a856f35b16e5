"""The house rules that keep the code readable: the engine's rooms stay small and import one
way, library code never imports the command-line tools, and the module map in the docs names
files that exist."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the engine's modules, each importing only from those before it
ENGINE_ORDER = ["distributed", "stream", "cli", "schedule", "loops", "state", "checkpoints", "run_dir", "loggers",
                "build", "run"]
MAX_LINES = 350


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved in its package)."""
    package = path.parent.relative_to(ROOT).as_posix().replace("/", ".")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import run`
    return names


def test_every_engine_module_is_small_and_listed():
    files = {p.stem for p in (ROOT / "engine").glob("*.py")} - {"__init__"}
    assert files == set(ENGINE_ORDER), "list a new engine module in ENGINE_ORDER (and the engine's docstring)"
    for name in ENGINE_ORDER:
        lines = len((ROOT / "engine" / f"{name}.py").read_text().splitlines())
        assert lines <= MAX_LINES, f"engine/{name}.py has {lines} lines: split it where its sections are"


def test_engine_modules_import_one_way():
    for position, name in enumerate(ENGINE_ORDER):
        imported = {m.split(".")[1] for m in imported_modules(ROOT / "engine" / f"{name}.py")
                    if m.startswith("engine.") and m.split(".")[1] in ENGINE_ORDER}
        later = imported - set(ENGINE_ORDER[:position])
        assert not later, f"engine/{name}.py imports {sorted(later)}, which come after it"
    docstring = ast.get_docstring(ast.parse((ROOT / "engine" / "__init__.py").read_text()))
    assert all(f"``{name}``" in docstring for name in ENGINE_ORDER)


def test_the_stream_scripts_public_names_come_from_engine():
    import engine
    for script in ("spatial_cnn.py", "motion_cnn.py"):
        used = set(re.findall(r"\bengine\.(\w+)", (ROOT / script).read_text()))
        assert used and all(hasattr(engine, name) for name in used), (script, used)


def test_library_code_never_imports_tools_or_benchmarks():
    library = [p for folder in ("dataloader", "models", "engine", "inference", "flow") for p in (ROOT / folder).glob("*.py")]
    library += [ROOT / f for f in ("utils.py", "scorefiles.py", "spatial_cnn.py", "motion_cnn.py", "average_fusion.py",
                                   "predict.py", "pipeline.py")]
    for path in library:
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("tools", "benchmarks")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: move what it needs into a library module"
