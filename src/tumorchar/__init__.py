"""tumorchar: computer-aided characterization of lung nodules (CT) and pancreatic cysts (MRI).

Implements Hussein et al., "Lung and Pancreatic Tumor Characterization in the Deep Learning
Era" (IEEE TMI 2019): a 3D CNN with graph-regularized sparse multi-task learning (supervised)
and k-means with a proportion-SVM (unsupervised).
"""

from importlib import metadata as _metadata

try:  # one version, the installed package's (pyproject.toml)
    __version__ = _metadata.version("tumorchar")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    """`tumorchar.load_model` is imported on first use, keeping `import tumorchar` light."""
    if name == "load_model":
        from tumorchar.bundle.characterizer import load_model

        return load_model
    raise AttributeError(f"module 'tumorchar' has no attribute {name!r}")
