"""The package's layering: the library never drives the command line."""

import ast
import subprocess
import sys
from pathlib import Path

import tumorchar

SRC = Path(tumorchar.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_cli():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.is_relative_to(SRC / "cli"):
            continue
        bad = {n for n in _imports(path) if n == "tumorchar.cli" or n.startswith("tumorchar.cli.")}
        if bad:
            offenders.append(f"{path.relative_to(SRC)}: {sorted(bad)}")
    assert offenders == []


def test_running_reproduce_and_train_does_not_load_the_cli():
    code = (
        "import sys, tumorchar.experiments.reproduce, tumorchar.bundle.train; "
        "print(any(m == 'tumorchar.cli' or m.startswith('tumorchar.cli.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_cli_help_does_not_import_numerical_libraries():
    code = (
        "import sys, tumorchar.cli; "
        "print(sorted(m for m in ('numpy', 'torch', 'pandas', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_definition_of_the_shared_utilities():
    """Atomic writes, canonical JSON and package versions live in one module each."""
    defined = {"canonical_json": [], "package_versions": [], "os.replace": []}
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in defined:
                defined[node.name].append(path.name)
        if "os.replace(" in text:
            defined["os.replace"].append(path.name)
    assert sorted(defined["package_versions"]) == ["provenance.py"]
    assert set(defined["canonical_json"]) <= {"provenance.py", "format.py"}
    # _io.py writes files; bundle/format.py swaps whole bundle folders into place
    assert sorted(defined["os.replace"]) == ["_io.py", "format.py"]


def test_tests_never_skip_on_a_broken_project_import():
    """`importorskip` of tumorchar's own modules would turn a broken import into a green skip."""
    tests = Path(__file__).parent
    offenders = [
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if path.name != "test_layout.py" and 'importorskip("tumorchar' in path.read_text()
    ]
    assert offenders == []
