"""One case through a model and into every requested output (SR, SEG, heatmap, case view).

`predict_with_outputs` is what `tumorchar predict` calls per case: it cuts the region as
`Characterizer.predict` does, predicts, and writes the outputs asked for in an
`OutputRequest`. The region written to a SEG and outlined in the case view is the caller's
mask when one was given, otherwise the region the model analysed around the point
(`bundle.region.region_mask`). DICOM outputs need the scan to be a DICOM series (folder or
file): their geometry and references come from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar.bundle import scan as scans
from tumorchar.bundle.outputs.algorithm import Algorithm


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs to write for a case, and where (None: not wanted)."""

    dicom_sr: Path | None = None
    dicom_seg: Path | None = None
    heatmap: Path | None = None
    html: Path | None = None
    heatmap_method: str = "auto"
    heatmap_layer: str | None = None

    @property
    def needs_dicom(self) -> bool:
        heat_dicom = self.heatmap is not None and str(self.heatmap).lower().endswith(".dcm")
        return self.dicom_sr is not None or self.dicom_seg is not None or heat_dicom

    @property
    def needs_heatmap(self) -> bool:
        return self.heatmap is not None or self.html is not None


@dataclass
class CaseOutputs:
    """The prediction, the files written (output name → path) and the case view fragment
    (for a batch page)."""

    result: Any
    written: dict[str, Path] = field(default_factory=dict)
    fragment: Any = None


def predict_with_outputs(
    model: Any,
    scan: str | os.PathLike,
    request: OutputRequest,
    at=None,
    mask=None,
    units: str = "mm",
    case_id: str | None = None,
    modality: str | None = None,
    page_number: int = 0,
    write_case_page: bool = True,
    component: str | int | None = None,
) -> CaseOutputs:
    """Predict one region of `scan` with `model` (a `Characterizer`) and write `request`'s
    outputs. With `write_case_page=False` the case view is only rendered (`fragment`)."""
    from tumorchar.bundle.outputs.heatmap import bundle_heatmap, write_heatmap
    from tumorchar.bundle.outputs.html import CaseView, fragment, write_page
    from tumorchar.bundle.outputs.seg import Segment, write_seg
    from tumorchar.bundle.outputs.sr import Finding, write_sr
    from tumorchar.bundle.region import region_mask

    scan_path = Path(scan) if isinstance(scan, str | os.PathLike) else None
    case = scans.as_scan(scan, case_id=case_id, modality=modality)
    model.check_modality(case)
    patch = model.region(case, at=at, mask=mask, units=units, component=component)
    result = model.predict_patch(patch, case.case_id)
    outputs = CaseOutputs(result)
    algorithm = Algorithm.of(model)
    source = _source(scan_path, case) if request.needs_dicom else None
    if mask is not None:
        region, from_caller = scans.mask_array(case, mask, component), True
    else:
        region, from_caller = (
            region_mask(case, np.asarray(result.region["center_mm"]), model.region_settings),
            False,
        )
    seg = None
    if request.dicom_seg is not None:
        label = f"{_finding_name(model)} {'(given mask)' if from_caller else 'region analysed'}"
        seg = write_seg(request.dicom_seg, source, [Segment(region, label, from_caller)], algorithm)
        outputs.written["dicom_seg"] = seg.path
    if request.dicom_sr is not None:
        finding = Finding(result, segment_number=1 if seg is not None else None)
        outputs.written["dicom_sr"] = write_sr(
            request.dicom_sr, source, [finding], algorithm, seg
        ).path
    heat = on_scan = None
    if request.needs_heatmap:
        heat = bundle_heatmap(model, patch, request.heatmap_method, request.heatmap_layer)
        on_scan = heat.on_scan(case)
    if request.heatmap is not None:
        outputs.written["heatmap"] = write_heatmap(
            request.heatmap, on_scan, case, heat, source, algorithm
        )
    if request.html is not None:
        method = heat.method + (f" ({heat.layer})" if heat.layer else "")
        view = CaseView(result, case, region, algorithm, model.score_range, on_scan, method)
        outputs.fragment = fragment(page_number, view)
        if write_case_page:
            outputs.written["html"] = write_page(request.html, [outputs.fragment])
    return outputs


def _finding_name(model: Any) -> str:
    return "nodule" if model.modality == "ct" else "cyst"


def _source(scan_path: Path | None, case: scans.Scan) -> list:
    """The stand-ins of the scan's DICOM series, checked against the scan's grid."""
    from tumorchar.bundle.outputs.source import read_source_series

    dicom = scan_path is not None and (
        scan_path.is_dir() or scan_path.name.lower().endswith(".dcm")
    )
    if not dicom:
        raise scans.ScanError(
            f"case {case.case_id}: DICOM SR / SEG / Parametric Map outputs need a DICOM scan "
            "(a series folder or a .dcm file); write the heatmap as .nii.gz or .nrrd instead"
        )
    source = read_source_series(scan_path, case.case_id)
    shape = (len(source), int(source[0].Rows), int(source[0].Columns))
    if shape != case.shape_zyx:
        raise scans.ScanError(
            f"case {case.case_id}: the DICOM headers describe a {shape} grid but the scan read "
            f"is {case.shape_zyx}"
        )
    return source
