"""Nothing under src/ unpickles a file: no pickle.load(s), joblib.load, torch.load without
weights_only=True, or np.load(allow_pickle=True). (The one planned exception, issue 13's
allow-list unpickler for the I3D numpy checkpoint, must be listed in ALLOWED with a reason.)"""

import ast
from pathlib import Path

import tumorchar

SRC = Path(tumorchar.__file__).parent
# "module path relative to src/tumorchar": reason
ALLOWED: dict[str, str] = {
    "features/weights.py": "issue 13: the I3D Kinetics-400 numpy checkpoint, read only through "
    "AllowListUnpickler (numpy _reconstruct / ndarray / dtype; every other global refused, "
    "tests/features/test_weights.py), after its archive and file sha256 match the pinned sums",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unpickling_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "joblib", "dill"):
            found.append(f"line {node.lineno}: from {node.module} import ...")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("pickle", "joblib", "dill", "cloudpickle", "shelve"):
                    found.append(f"line {node.lineno}: import {alias.name}")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        last = name.rsplit(".", 1)[-1]
        if name.endswith(("pickle.load", "pickle.loads", "joblib.load", "Unpickler")):
            found.append(f"line {node.lineno}: {name}")
        elif name.endswith("torch.load") and not _is_true(_keyword(node, "weights_only")):
            found.append(f"line {node.lineno}: {name} without weights_only=True")
        elif (
            last == "load"
            and name.startswith(("np.", "numpy."))
            and _is_true(_keyword(node, "allow_pickle"))
        ):
            found.append(f"line {node.lineno}: {name}(allow_pickle=True)")
    return found


def test_no_module_unpickles():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = str(path.relative_to(SRC))
        calls = unpickling_calls(ast.parse(path.read_text(), filename=str(path)))
        if calls and relative not in ALLOWED:
            offenders[relative] = calls
    assert offenders == {}


def test_the_scanner_finds_each_kind():
    code = """
import pickle
pickle.load(f)
joblib.load(p)
torch.load(p)
torch.load(p, weights_only=False)
np.load(p, allow_pickle=True)
torch.load(p, weights_only=True)
np.load(p, allow_pickle=False)
"""
    found = unpickling_calls(ast.parse(code))
    assert len(found) == 6, found
