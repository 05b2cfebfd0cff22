"""Estimators: graph-regularized sparse MTL (fixed or inner-CV rho), trace-norm MTL,
proportion-SVM, the unsupervised pipeline, and the dead-feature filter.

Names are imported lazily so that `import tumorchar.models` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "GraphSparseMTL": "tumorchar.models.mtl",
    "TraceNormMTL": "tumorchar.models.mtl",
    "GraphSparseMTLCV": "tumorchar.models.mtl_cv",
    "NearConstantFilter": "tumorchar.models.preprocessing",
    "ProportionSVM": "tumorchar.models.psvm",
    "UnsupervisedClassifier": "tumorchar.models.unsupervised",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tumorchar.models' has no attribute {name!r}")
