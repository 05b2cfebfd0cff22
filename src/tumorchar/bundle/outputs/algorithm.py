"""Who made a prediction: the algorithm identification every output carries.

One record per model (`Algorithm.of(characterizer)`): the package name and version, the model
bundle's manifest digest, what the model is (kind and features), what it was trained on, and
whether that was the annotation-driven phantom, in which case every output says so
(`PHANTOM_WARNING`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAME = "tumorchar"
PHANTOM_WARNING = (
    "this model was trained on the annotation-driven phantom (CT-like patches rendered from "
    "LIDC annotations), not on real CT: its outputs demonstrate the pipeline only and are not "
    "for clinical use"
)


@dataclass(frozen=True)
class Algorithm:
    """Identification of the model that produced a prediction."""

    version: str
    bundle_sha256: str
    kind: str
    features: str
    modality: str
    training_source: str
    n_training_cases: int | None
    is_phantom: bool
    created_utc: str
    name: str = NAME

    @classmethod
    def of(cls, model: Any) -> Algorithm:
        """From a `tumorchar.bundle.Characterizer` (its manifest and provenance)."""
        manifest = model.manifest
        data = manifest["training_data"]
        return cls(
            version=str(manifest["package_version"]),
            bundle_sha256=str(manifest["manifest_sha256"]),
            kind=str(manifest["kind"]),
            features=str(manifest["pipeline"]["features"]["label"]),
            modality=str(manifest["modality"]),
            training_source=str(data.get("source", "unknown")),
            n_training_cases=data.get("n_cases"),
            is_phantom=bool(data.get("is_phantom")),
            created_utc=str(manifest.get("created_utc", "")),
        )

    @property
    def model_name(self) -> str:
        """Short model description, e.g. ``mtl (C3D fc6)``."""
        return f"{self.kind} ({self.features})"

    @property
    def warning(self) -> str | None:
        return PHANTOM_WARNING if self.is_phantom else None

    def parameters(self) -> dict[str, str]:
        """Name → text, as DICOM algorithm parameters carry them."""
        cases = "" if self.n_training_cases is None else f"{self.n_training_cases} "
        params = {
            "model": self.model_name,
            "bundle_sha256": self.bundle_sha256,
            "trained": f"{self.created_utc} on {cases}{self.training_source} cases".strip(),
        }
        if self.is_phantom:
            params["warning"] = PHANTOM_WARNING
        return params

    def series_description(self, what: str) -> str:
        """A DICOM series description (LO, ≤ 64 characters) that flags a phantom model."""
        text = f"{self.name} {what}"
        if self.is_phantom:
            text += " - PHANTOM-TRAINED, not for clinical use"
        return text[:64]

    def parameter_texts(self) -> list[str]:
        """``name=value`` strings (SR algorithm parameters are plain text items)."""
        return [f"{key}={value}" for key, value in self.parameters().items()]
