"""`tumorchar predict`: one region or a CSV batch, Rich output, JSON written atomically.

(Moved from `tumorchar.bundle.cli_predict`: command-line code lives in `tumorchar.cli`.)

A batch goes on past a bad case and lists the failures at the end; rerunning it with the
same `--json` file reuses the results already there for the same model (resume) — for a
case whose requested output files are all there, and not when a batch page (`--html`) is
asked for, which needs every case rendered.

Outputs for viewers (`tumorchar.bundle.outputs`): `--dicom-sr`, `--dicom-seg`, `--heatmap`
and `--html` name files for one case; for a batch, the first three name folders that get
one `<case_id>.dcm` / `<case_id>.nii.gz` (or `.dcm` with `--heatmap-format dcm`) per case,
and `--html` one page with every case.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tumorchar.cli._common import HeatmapFormat, HeatmapMethod, Modality, Units, fail
from tumorchar.errors import BundleError, ScanError

if TYPE_CHECKING:  # the heavy modules are imported when a command runs
    from rich.console import Console

    from tumorchar.bundle.characterizer import Characterization, Characterizer

_EXPECTED_ERRORS = (ScanError, BundleError, ValueError, OSError)


def write_json_atomic(path: Path, payload: Any) -> None:
    from tumorchar._io import write_json_atomic as write

    write(path, payload, allow_nan=False, default=None)


def _load(model: Path) -> Characterizer:
    from tumorchar.bundle.characterizer import load_model

    try:
        return load_model(model)
    except BundleError as error:
        fail(str(error))


def _phantom_note(model: Characterizer) -> str | None:
    from tumorchar.bundle.outputs.algorithm import Algorithm

    return Algorithm.of(model).warning


def render(result: Characterization, model: Characterizer, console: Console) -> None:
    """One result as a Rich table, with the model's provenance underneath."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"case {escape(result.case_id)}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    negative, positive = model.manifest["classes"]
    colour = "red" if result.label == positive else "green"
    table.add_row("class", f"[{colour}]{escape(result.label)}[/]")
    table.add_row(
        f"P({escape(positive)})",
        f"{result.probability:.3f}  [dim]({escape(result.probability_method)})[/]",
    )
    if result.malignancy is not None:
        low, high = model.score_range["malignancy"]
        table.add_row("malignancy", f"{result.malignancy:.2f}  [dim](scale {low:g}–{high:g})[/]")
    for name, value in result.attributes.items():
        low, high = model.score_range[name]
        table.add_row(escape(name), f"{value:.2f}  [dim](scale {low:g}–{high:g})[/]")
    center = ", ".join(f"{v:.1f}" for v in result.region["center_mm"])
    if result.region["kind"] == "ct-cube":
        region = f"centre ({center}) mm, {result.region['size_mm']:g} mm cube"
    else:
        region = f"ROI centre ({center}) mm, {result.region['n_slices']} axial slice(s)"
    if result.region["padded_fraction"] > 0:
        region += f", {100 * result.region['padded_fraction']:.0f}% outside the scan"
    table.add_row("region", region)
    console.print(table)
    data = result.provenance["training_data"]
    provenance = result.provenance
    console.print(
        escape(
            f"model: {model.kind} ({provenance['features']}), tumorchar "
            f"{provenance['package_version']}, trained {provenance['created_utc']} "
            f"on {data['n_cases']} {data['source']} cases"
        ),
        style="dim",
    )
    note = _phantom_note(model)
    if note:
        console.print(f"[yellow]note:[/] {escape(note)}")


def predict_one(
    model_dir: Path,
    scan: Path,
    point,
    units: str,
    mask: Path | None,
    json_out: Path | None,
    modality: str | None,
    request=None,
    component: str | int | None = None,
) -> None:
    if json_out is not None and json_out.is_dir():
        fail(f"--json {json_out} is a folder; give the name of a file to write")
    model = _load(model_dir)
    where = {"at": point, "mask": mask, "units": units, "modality": modality}
    try:
        if request is None:
            result = model.predict(scan, component=component, **where)
        else:
            from tumorchar.bundle.outputs.case import predict_with_outputs

            outputs = predict_with_outputs(model, scan, request, component=component, **where)
            result = outputs.result
    except _EXPECTED_ERRORS as error:
        fail(str(error))
    from rich.console import Console

    console = Console()
    render(result, model, console)
    if request is not None:
        for name, path in outputs.written.items():
            console.print(f"{name.replace('_', ' ')}: {path}", style="dim", markup=False)
    if json_out is not None:
        from tumorchar.lock import FolderLock

        with FolderLock.beside(json_out):
            write_json_atomic(json_out, result.to_dict())


def read_batch(csv_path: Path) -> list[dict[str, Any]]:
    """Rows of a batch CSV: `scan` (relative paths are relative to the CSV's folder) and
    either `x,y,z` (+ optional `units`) or `mask` (+ optional `component`: ``largest`` or a
    label value); optional `case_id`, `modality`."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    if "scan" not in rows[0]:
        raise ValueError(f"{csv_path} needs a 'scan' column (and x,y,z or mask)")
    base = Path(csv_path).parent
    jobs, seen = [], set()
    for number, row in enumerate(rows, start=2):
        scan = base / row["scan"].strip()
        case_id = (row.get("case_id") or "").strip() or f"row{number}_{Path(scan).name}"
        if case_id in seen:
            raise ValueError(f"{csv_path}: case id {case_id!r} appears twice")
        seen.add(case_id)
        job: dict[str, Any] = {"case_id": case_id, "scan": scan, "at": None, "mask": None}
        if (row.get("mask") or "").strip():
            job["mask"] = base / row["mask"].strip()
        else:
            job["at"] = tuple(row.get(axis, "") for axis in ("x", "y", "z"))
        job["units"] = (row.get("units") or "mm").strip() or "mm"
        job["modality"] = (row.get("modality") or "").strip() or None
        job["component"] = (row.get("component") or "").strip() or None
        jobs.append(job)
    return jobs


def _run_job(model: Characterizer, job: dict[str, Any], outputs=None, number: int = 0):
    """Predict one batch row; with an `OutputsPlan`, also write its outputs (returns the
    `CaseOutputs`, else the `Characterization`)."""
    from tumorchar.bundle.scan import parse_component

    at = job["at"]
    if at is not None:
        try:
            at = tuple(float(v) for v in at)
        except ValueError:
            raise ScanError(f"case {job['case_id']}: x, y, z must be numbers") from None
    where = {
        "at": at,
        "mask": job["mask"],
        "units": job["units"],
        "case_id": job["case_id"],
        "modality": job["modality"],
        "component": parse_component(job.get("component")),
    }
    if outputs is None:
        return model.predict(job["scan"], **where)
    from tumorchar.bundle.outputs.case import predict_with_outputs

    request = outputs.for_case(job["case_id"])
    return predict_with_outputs(
        model, job["scan"], request, page_number=number, write_case_page=False, **where
    )


class OutputsPlan:
    """The per-case output paths of a batch: folders for SR / SEG / heatmap files, one page."""

    def __init__(self, sr, seg, heatmap, html, method: str, heatmap_format: str):
        self.sr, self.seg, self.heatmap, self.html = sr, seg, heatmap, html
        self.method, self.heatmap_format = method, heatmap_format

    def for_case(self, case_id: str):
        from tumorchar.bundle.outputs.case import OutputRequest

        def inside(folder, suffix):
            return None if folder is None else Path(folder) / f"{_file_name(case_id)}{suffix}"

        return OutputRequest(
            dicom_sr=inside(self.sr, ".dcm"),
            dicom_seg=inside(self.seg, ".dcm"),
            heatmap=inside(self.heatmap, f".{self.heatmap_format}"),
            html=self.html,
            heatmap_method=self.method,
        )

    def files_exist(self, case_id: str) -> bool:
        request = self.for_case(case_id)
        paths = (request.dicom_sr, request.dicom_seg, request.heatmap)
        return all(p is None or p.is_file() for p in paths)


def _file_name(case_id: str) -> str:
    """A case id as a file name: path separators and other odd characters become '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id).lstrip(".") or "case"


def _request(job: dict[str, Any]) -> dict[str, Any]:
    """What a batch row asks for, as JSON: a result is reused only for the same request."""
    return {key: None if value is None else str(value) for key, value in job.items()}


def _previous_results(json_out: Path | None, model: Characterizer, jobs) -> dict[str, dict]:
    """Results of an earlier run with the same model and the same request (for resuming)."""
    if json_out is None or not Path(json_out).is_file():
        return {}
    try:
        previous = json.loads(Path(json_out).read_text())
    except json.JSONDecodeError:
        return {}
    if previous.get("model_sha256") != model.manifest["manifest_sha256"]:
        return {}
    requests = previous.get("requests", {})
    wanted = {job["case_id"]: _request(job) for job in jobs}
    return {
        r["case_id"]: r
        for r in previous.get("results", [])
        if requests.get(r["case_id"]) == wanted.get(r["case_id"])
    }


def _failure_message(job: dict[str, Any], error: Exception) -> str:
    """The project's errors by their message; anything else also by its type (a bug or an
    environment problem, not bad input)."""
    from tumorchar.errors import TumorcharError

    if isinstance(error, TumorcharError):
        message = str(error)
    else:
        message = f"unexpected {type(error).__name__}: {error}"
    if job["case_id"] not in message:
        message = f"case {job['case_id']}: {message}"
    return message


def predict_batch(
    model_dir: Path, csv_path: Path, json_out: Path | None, outputs: OutputsPlan | None = None
) -> None:
    """Every row is tried; a failing row (whatever it raises) is listed and the batch goes
    on. With `--json`, the file is rewritten atomically after every row, so finished results
    survive an interruption, and it lists the failures; exit code 1 if any row failed."""
    from contextlib import nullcontext

    from tumorchar.lock import FolderLock
    from tumorchar.progress import progress_bar

    model = _load(model_dir)
    try:
        jobs = read_batch(csv_path)
    except (ValueError, OSError) as error:
        fail(str(error))
    if json_out is not None and json_out.is_dir():
        fail(f"--json {json_out} is a folder; give the name of a file to write")
    lock = FolderLock.beside(json_out) if json_out is not None else nullcontext()
    with lock:
        done = _previous_results(json_out, model, jobs)
        if outputs is not None:  # reuse only what has its files; a page needs every case
            done = (
                {}
                if outputs.html is not None
                else {case: r for case, r in done.items() if outputs.files_exist(case)}
            )
        # reused results are kept from the first write on: an interruption never loses them
        results = {job["case_id"]: done[job["case_id"]] for job in jobs if job["case_id"] in done}
        failures: dict[str, str] = {}
        fragments = []

        def save() -> None:
            if json_out is not None:
                ordered = [results[job["case_id"]] for job in jobs if job["case_id"] in results]
                write_json_atomic(json_out, _payload(model, jobs, ordered, failures))

        save()  # an unwritable --json stops the batch before the first case, not after
        with progress_bar(True, len(jobs), "predict") as advance:
            for job in jobs:
                case_id = job["case_id"]
                if case_id not in results:
                    try:
                        made = _run_job(model, job, outputs, len(fragments))
                    except Exception as error:  # noqa: BLE001 - the case boundary: go on
                        failures[case_id] = _failure_message(job, error)
                    else:
                        if outputs is None:
                            results[case_id] = made.to_dict()
                        else:
                            results[case_id] = made.result.to_dict()
                            if made.fragment is not None:
                                fragments.append(made.fragment)
                    save()
                advance()
    from rich.console import Console

    _batch_table([results[j["case_id"]] for j in jobs if j["case_id"] in results], model, Console())
    if outputs is not None and outputs.html is not None and fragments:
        from tumorchar.bundle.outputs.html import write_page

        page = write_page(outputs.html, fragments)
        Console().print(f"case view: {page}", style="dim", markup=False)
    if failures:
        console = Console(stderr=True)
        console.print(f"[bold red]{len(failures)} of {len(jobs)} case(s) failed:[/]")
        for message in failures.values():
            console.print(f"  {message}", markup=False, highlight=False, soft_wrap=True)
        if json_out is not None:
            console.print(f"the failures are listed in {json_out}", markup=False)
        raise typer.Exit(1)


def predict_store_command(model_dir: Path, patches: Path, json_out: Path | None) -> None:
    """Every case of a patch store: a table, the held-out figures when labelled, the JSON."""
    from rich.console import Console

    from tumorchar.bundle.batch import predict_store
    from tumorchar.data.patches import PatchStore
    from tumorchar.progress import progress_bar

    model = _load(model_dir)
    try:
        store = PatchStore(patches)
    except FileNotFoundError as error:
        fail(str(error))
    with progress_bar(True, len(store.case_ids), "predict") as advance:
        try:
            result = predict_store(model, store, progress=advance)
        except BundleError as error:
            fail(str(error))
    console = Console()
    if store.note:
        console.print(f"[bold]{store.note}[/]", soft_wrap=True)
    rows = [
        {"case_id": c["case_id"], "label": c["class"], "probability": c["probability"],
         "malignancy": c["scores"].get("malignancy", float("nan"))}
        for c in result.cases
    ]  # fmt: skip
    _batch_table(rows, model, console)
    summary = result.summary
    if "auc" in summary:
        console.print(
            f"held-out: {summary['labelled']} labelled cases ({summary['positives']} "
            f"{model.manifest['classes'][1]}): accuracy {summary['accuracy']:.3f}, "
            f"sensitivity {summary['sensitivity']:.3f}, specificity "
            f"{summary['specificity']:.3f}, AUC {summary['auc']:.3f}"
        )
    if json_out is not None:
        write_json_atomic(json_out, _finite(result.to_dict(model, store)))
    if result.failures:
        err = Console(stderr=True)
        err.print(f"[bold red]{len(result.failures)} case(s) failed:[/]")
        for message in result.failures.values():
            err.print(f"  {message}")
        raise typer.Exit(1)


def _finite(value):
    """NaN → None, so the JSON stays standard."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _payload(model: Characterizer, jobs, results: list[dict], failures: dict) -> dict:
    return {
        "model": str(model.folder),
        "model_sha256": model.manifest["manifest_sha256"],
        "requests": {job["case_id"]: _request(job) for job in jobs},
        "results": results,
        "failures": failures,
        "complete": len(results) + len(failures) == len(jobs),
    }


def _batch_table(results: list[dict], model: Characterizer, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    positive = model.manifest["classes"][1]
    table = Table(title=f"{len(results)} case(s), model {model.kind}", title_justify="left")
    table.add_column("case")
    table.add_column("class")
    table.add_column(f"P({escape(positive)})", justify="right")
    if model.kind == "mtl":
        table.add_column("malignancy", justify="right")
    for result in results:
        cells = [escape(result["case_id"]), escape(result["label"]), f"{result['probability']:.3f}"]
        if model.kind == "mtl":
            cells.append(f"{result['malignancy']:.2f}")
        table.add_row(*cells)
    console.print(table)
    note = _phantom_note(model)
    if note:
        console.print(f"[yellow]note:[/] {escape(note)}")


def _parse_point(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise typer.BadParameter(f"expected X,Y,Z (three numbers), got {text!r}")
    return values  # type: ignore[return-value]


def predict(
    model: Path = typer.Option(
        ..., "--model", exists=True, file_okay=False, help="Model bundle folder (tumorchar train)."
    ),
    scan: Path | None = typer.Option(
        None, "--scan", exists=True, help="DICOM series folder or file, NIfTI or NRRD."
    ),
    at: str | None = typer.Option(None, "--at", help="Region centre X,Y,Z."),
    units: Units = typer.Option(
        Units.mm, help="Units of --at: mm (world) or voxel (column,row,slice)."
    ),
    mask: Path | None = typer.Option(
        None, "--mask", exists=True, dir_okay=False, help="Mask file on the scan's grid."
    ),
    batch: Path | None = typer.Option(
        None,
        "--batch",
        exists=True,
        dir_okay=False,
        help="CSV with columns scan and x,y,z [units] or mask [, case_id].",
    ),
    patches: Path | None = typer.Option(
        None,
        "--patches",
        exists=True,
        file_okay=False,
        help="Characterize every case of this patch store (e.g. held-out patients).",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result(s) here."),
    modality: Modality | None = typer.Option(None, help="Override the scan's modality."),
    dicom_sr: Path | None = typer.Option(
        None, "--dicom-sr", help="DICOM SR (TID 1500) of the result (a folder with --batch)."
    ),
    dicom_seg: Path | None = typer.Option(
        None, "--dicom-seg", help="DICOM SEG of the region used (a folder with --batch)."
    ),
    heatmap: Path | None = typer.Option(
        None,
        "--heatmap",
        help="Activation map on the scan's grid: .nii.gz, .nrrd or .dcm (Parametric Map); "
        "a folder with --batch.",
    ),
    html: Path | None = typer.Option(
        None, "--html", help="Self-contained HTML case view (one page for a batch)."
    ),
    heatmap_method: HeatmapMethod = typer.Option(
        HeatmapMethod.auto,
        "--heatmap-method",
        help="auto: Grad-CAM for C3D models, occlusion for GIST models.",
    ),
    heatmap_format: HeatmapFormat = typer.Option(
        HeatmapFormat.nii_gz, "--heatmap-format", help="File type of per-case heatmaps (--batch)."
    ),
    component: str | None = typer.Option(
        None,
        "--component",
        help="A mask of several separate regions: 'largest' or a label value picks one.",
    ),
) -> None:
    """Characterize a region of a new scan, a CSV batch, or a whole patch store with a trained
    model bundle."""
    wanted = any(p is not None for p in (dicom_sr, dicom_seg, heatmap, html))
    if patches is not None:
        if scan is not None or at is not None or mask is not None or batch is not None:
            fail("--patches takes its cases from the store; drop --scan/--at/--mask/--batch")
        if wanted:
            fail("--patches writes the JSON only (no scan to attach DICOM or heatmaps to)")
        predict_store_command(model, patches, json_out)
        return
    if batch is not None:
        if scan is not None or at is not None or mask is not None:
            fail("--batch takes its scans and regions from the CSV; drop --scan/--at/--mask")
        plan = None
        if wanted:
            for option, path in (
                ("--dicom-sr", dicom_sr),
                ("--dicom-seg", dicom_seg),
                ("--heatmap", heatmap),
            ):
                if path is not None and path.suffix and not path.is_dir():
                    fail(f"with --batch, {option} names a folder (one file per case): {path}")
            plan = OutputsPlan(
                dicom_sr, dicom_seg, heatmap, html, heatmap_method.value, heatmap_format.value
            )
        predict_batch(model, batch, json_out, plan)
        return
    if scan is None or (at is None) == (mask is None):
        fail("give --scan and exactly one of --at X,Y,Z or --mask FILE (or --batch CSV)")
    point = _parse_point(at) if at is not None else None
    chosen = None if modality is None else modality.value
    request = None
    if wanted:
        from tumorchar.bundle.outputs.case import OutputRequest

        request = OutputRequest(dicom_sr, dicom_seg, heatmap, html, heatmap_method.value)
    from tumorchar.bundle.scan import parse_component

    try:
        picked = parse_component(component)
    except ScanError as error:
        fail(str(error))
    predict_one(model, scan, point, units.value, mask, json_out, chosen, request, picked)


def register(app: typer.Typer) -> None:
    app.command()(predict)
