"""DICOM SEG of the region a prediction used, on the source series' geometry.

One segment per finding, binary, one frame per source slice it touches (empty frames are
left out), built with highdicom from the source stand-ins (`outputs.source`: only the
allow-listed patient / study attributes travel). Segment semantics are coded: category
"Morphologically abnormal structure" (SCT 49755003), type "Nodule" (SCT 27925004) in the
lung (SCT 39607008) for CT, "Cyst" (SCT 367643001) in the pancreas (SCT 15776009) for MRI.
A segment is either the mask the caller gave (algorithm type MANUAL: tumorchar did not draw
it) or the region the model analysed around a point (AUTOMATIC, with tumorchar's algorithm
identification): its label says which.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorchar._io import atomic_path
from tumorchar.bundle.outputs.algorithm import Algorithm

SEG_SERIES_NUMBER = 9101
_LABEL_LENGTH = 64  # LO value representation


@dataclass(frozen=True)
class Segment:
    """One finding's voxels (bool, z, y, x, on the source grid) and how they were obtained."""

    mask: np.ndarray
    label: str
    from_caller: bool  # the caller's mask (True) or the region analysed around a point


@dataclass(frozen=True)
class WrittenSeg:
    """What an SR needs to reference a written SEG."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    segment_numbers: tuple[int, ...]


def segment_codes(modality: str):
    """(category, type, anatomic site) codes of a finding of `modality` (``ct`` / ``mri``)."""
    from pydicom.sr.codedict import codes

    finding = codes.SCT.Nodule if modality == "ct" else codes.SCT.Cyst
    site = codes.SCT.Lung if modality == "ct" else codes.SCT.Pancreas
    return codes.SCT.MorphologicallyAbnormalStructure, finding, site


def write_seg(
    path: str | os.PathLike,
    source: Sequence,
    segments: Sequence[Segment],
    algorithm: Algorithm,
    series_number: int = SEG_SERIES_NUMBER,
) -> WrittenSeg:
    """Write the segments as one DICOM SEG instance at `path` (atomically)."""
    import highdicom as hd

    pixels = _label_frames(source, segments)
    seg = hd.seg.Segmentation(
        source_images=list(source),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(number, segment, algorithm)
            for number, segment in enumerate(segments, start=1)
        ],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.name,
        manufacturer_model_name=algorithm.model_name[:64],
        software_versions=algorithm.version,
        device_serial_number=algorithm.bundle_sha256[:16],
        series_description=algorithm.series_description("region"),
        content_label="TUMORCHAR",
        content_description=f"region used by {algorithm.name} {algorithm.model_name}"[:64],
    )
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return WrittenSeg(
        path=Path(path),
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        series_instance_uid=str(seg.SeriesInstanceUID),
        segment_numbers=tuple(range(1, len(segments) + 1)),
    )


def _label_frames(source: Sequence, segments: Sequence[Segment]) -> np.ndarray:
    """(frames, rows, columns, segments) uint8, frame k on source slice k."""
    if not segments:
        raise ValueError("a DICOM SEG needs at least one segment")
    shape = (len(source), int(source[0].Rows), int(source[0].Columns))
    stack = []
    for segment in segments:
        mask = np.asarray(segment.mask, bool)
        if mask.shape != shape:
            raise ValueError(
                f"segment {segment.label!r}: mask shape {mask.shape} (z, y, x) does not match "
                f"the source series ({shape})"
            )
        if not mask.any():
            raise ValueError(f"segment {segment.label!r} is empty")
        stack.append(mask)
    return np.stack(stack, axis=-1).astype(np.uint8)


def _description(number: int, segment: Segment, algorithm: Algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    category, finding, site = segment_codes(algorithm.modality)
    if segment.from_caller:
        kind, identification = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
    else:
        kind = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm.name,
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm.version,
            parameters={k: v[:64] for k, v in algorithm.parameters().items() if k != "warning"},
        )
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.label[:_LABEL_LENGTH],
        segmented_property_category=category,
        segmented_property_type=finding,
        algorithm_type=kind,
        algorithm_identification=identification,
        tracking_uid=hd.UID(),
        tracking_id=segment.label[:_LABEL_LENGTH],
        anatomic_regions=[site],
    )
