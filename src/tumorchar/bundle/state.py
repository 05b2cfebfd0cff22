"""Fitted estimators to JSON + arrays and back, without pickle.

An estimator becomes a JSON tree: its class (``module:QualName``) and its instance
attributes (constructor parameters and fitted attributes alike). Arrays in the tree are
replaced by references to entries of an `.npz` file; NumPy scalars, dtypes, tuples,
non-finite floats and nested estimators get small tagged objects. Anything else (a
callable, a random generator, an object array) is refused at save time with the name of
the attribute, so a bundle never holds state that cannot be restored exactly.

On load, classes are imported only from the modules in `ALLOWED_MODULES` (this package and
scikit-learn) and rebuilt without calling their constructors, as `copy` would; no code
from the file is executed.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

from tumorchar.bundle.format import BundleError

ALLOWED_MODULES = ("tumorchar", "sklearn", "imblearn")
_ARRAY_KINDS = "biufcUSM"  # bool, ints, floats, complex, unicode, bytes, datetime


def _class_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_allowed(module: str) -> bool:
    return module.split(".")[0] in ALLOWED_MODULES


def encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """Encode `value` (found at attribute path `key`) as JSON data; arrays go to `arrays`."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return {"__scalar__": value.dtype.str, "value": encode(value.item(), key, arrays)}
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS:
            raise BundleError(f"cannot store {key}: arrays of dtype {value.dtype} need pickle")
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__dtype__": np.dtype(value).str}
    if isinstance(value, list | tuple):
        items = [encode(item, f"{key}.{i}", arrays) for i, item in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(name, str) for name in value):
            raise BundleError(f"cannot store {key}: dictionary keys must be strings")
        return {"__dict__": {name: encode(v, f"{key}.{name}", arrays) for name, v in value.items()}}
    if hasattr(value, "get_params") and _is_allowed(type(value).__module__):
        attributes = vars(value)
        return {
            "__estimator__": _class_path(value),
            "attributes": {
                name: encode(v, f"{key}.{name}", arrays) for name, v in attributes.items()
            },
        }
    raise BundleError(
        f"cannot store {key}: values of type {type(value).__name__} are not supported"
    )


def decode(data: Any, arrays: Any) -> Any:
    """Inverse of `encode`; `arrays` is the mapping (e.g. an open npz) holding the arrays."""
    if isinstance(data, list):
        return [decode(item, arrays) for item in data]
    if not isinstance(data, dict):
        return data
    if "__array__" in data:
        if data["__array__"] not in arrays:
            raise BundleError(f"array {data['__array__']!r} is missing from the bundle")
        return np.asarray(arrays[data["__array__"]])
    if "__float__" in data:
        return float(data["__float__"])
    if "__scalar__" in data:
        return np.dtype(data["__scalar__"]).type(decode(data["value"], arrays))
    if "__dtype__" in data:
        return np.dtype(data["__dtype__"])
    if "__tuple__" in data:
        return tuple(decode(item, arrays) for item in data["__tuple__"])
    if "__dict__" in data:
        return {name: decode(value, arrays) for name, value in data["__dict__"].items()}
    if "__estimator__" in data:
        obj = _new_instance(data["__estimator__"])
        obj.__dict__.update({n: decode(v, arrays) for n, v in data["attributes"].items()})
        return obj
    raise BundleError(f"unrecognized entry in estimator state: {sorted(data)}")


def _new_instance(path: str) -> Any:
    """An uninitialized instance of the allowed class named `module:QualName`."""
    module_name, _, qualname = path.partition(":")
    if not _is_allowed(module_name) or not qualname:
        raise BundleError(f"refusing to load class {path!r}: not from tumorchar or scikit-learn")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise BundleError(
            f"the bundle needs class {path!r}, which this installation does not have"
        ) from error
    if not isinstance(target, type) or not hasattr(target, "get_params"):
        raise BundleError(f"refusing to load {path!r}: not an estimator class")
    return target.__new__(target)


def estimators_to_state(
    estimators: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Encode named estimators (or plain values) into (JSON tree, arrays)."""
    arrays: dict[str, np.ndarray] = {}
    tree = {name: encode(value, name, arrays) for name, value in estimators.items()}
    return tree, arrays


def estimators_from_state(tree: dict[str, Any], arrays: Any) -> dict[str, Any]:
    """Rebuild the named estimators written by `estimators_to_state`."""
    return {name: decode(value, arrays) for name, value in tree.items()}
