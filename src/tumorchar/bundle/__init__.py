"""Model bundles: train once on a patch store, characterize new scans.

`load_model(path)` returns a `Characterizer`; `train_mtl` / `train_unsupervised` write
bundles. Names are imported lazily so that `import tumorchar.bundle` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "load_model": "tumorchar.bundle.characterizer",
    "Characterizer": "tumorchar.bundle.characterizer",
    "Characterization": "tumorchar.bundle.characterizer",
    "BundleError": "tumorchar.bundle.format",
    "ScanError": "tumorchar.bundle.scan",
    "read_scan": "tumorchar.bundle.scan",
    "train_mtl": "tumorchar.bundle.train",
    "train_unsupervised": "tumorchar.bundle.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tumorchar.bundle' has no attribute {name!r}")
