"""The project's exceptions: one base, `TumorcharError`, and one class per kind of failure.

Every error is a `ValueError` (bad input, named case) so callers that catch `ValueError` keep
working; `DatabaseError` is also a `RuntimeError` (it was one before the base existed).
Modules re-export the classes they raise, so `tumorchar.bundle.format.BundleError` and
`tumorchar.errors.BundleError` are the same class.
"""

from __future__ import annotations


class TumorcharError(ValueError):
    """Base of every error tumorchar raises on purpose; the message names the case or file."""


class DatabaseError(TumorcharError, RuntimeError):
    """The annotation database is missing, unreadable or not the expected schema."""


class ScanError(TumorcharError):
    """A scan, point, mask or modality that cannot be used (unreadable, outside the scan,
    contours that cannot be placed on the pixel grid)."""


class ScanReadError(TumorcharError):
    """A scan file or series that cannot be read."""


class CaseError(TumorcharError):
    """A case could not be turned into a patch; the message names the case."""


class StoreMismatchError(TumorcharError):
    """An existing store folder was written with another source or other settings."""


class StoreKindError(TumorcharError):
    """A 3D-only array (volume, 3D mask) was asked of a 2D patch store."""


class BundleError(TumorcharError):
    """A model bundle is missing, incomplete, altered or from an incompatible version."""


class TrainingError(TumorcharError):
    """The patch store cannot train the requested model."""


class StageError(TumorcharError):
    """A reproduce stage is declared wrongly (unknown input, duplicate name)."""


class WeightsError(TumorcharError, RuntimeError):
    """Pretrained weights cannot be fetched, verified or converted (the message says what to
    do about it)."""


class ForbiddenPickleGlobal(TumorcharError):
    """A weights pickle named a global outside the allow-list; nothing was called."""
