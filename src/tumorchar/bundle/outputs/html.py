"""A self-contained HTML case view of predictions (one case or a batch on one page).

Per case: axial, coronal and sagittal slices through the region with the region's outline
(cyan) and, when a heatmap was made, its overlay (a toggle shows or hides it), a slider
through the slices of each view; the scores against their rating scales (with the LIDC
anchor meanings at the ends), the class and probability-like score with how it was derived,
and the model's provenance. A phantom-trained model's outputs carry the warning on top.

Everything is in the one file: images are PNGs embedded as base64 data URIs, styles and the
small script inline, no external resource (not even a favicon request). Views are cut along
the scan's array axes and shown as radiologists read them (patient's left on the right,
superior up), with pixels resampled to square millimetres.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar._io import atomic_path
from tumorchar.bundle.outputs.algorithm import Algorithm

MAX_SLICES = 16  # per view; evenly spaced through the region, the centre slice included
VIEW_PIXELS = 160  # long side of a view image, before the page scales it
FIELD_MARGIN = 0.5  # field of view: the region's box grown by this fraction per side
CT_WINDOW = (-1350.0, 150.0)  # lung window, level −600 HU, width 1500 HU
OUTLINE_RGB = (0, 230, 255)
#: Meaning of the ends of each LIDC rating scale.
SCALE_ANCHORS = {
    "malignancy": ("highly unlikely", "highly suspicious"),
    "calcification": ("popcorn", "absent"),
    "sphericity": ("linear", "round"),
    "margin": ("poorly defined", "sharp"),
    "lobulation": ("none", "marked"),
    "spiculation": ("none", "marked"),
    "texture": ("non-solid", "solid"),
    "subtlety": ("extremely subtle", "obvious"),
}


@dataclass(frozen=True)
class CaseView:
    """What one case's section shows. `region_mask` and `heatmap` lie on the scan's grid."""

    result: Any  # tumorchar.bundle.Characterization
    scan: Any  # tumorchar.bundle.scan.Scan
    region_mask: np.ndarray
    algorithm: Algorithm
    score_ranges: dict[str, tuple[float, float]]
    heatmap: np.ndarray | None = None
    heatmap_method: str | None = None


@dataclass(frozen=True)
class Fragment:
    """One case's rendered section, with what the page's header needs from it (a batch page
    is assembled from fragments, so no scan has to stay in memory until the end)."""

    case_id: str
    label: str
    probability: float
    malignancy: float | None
    warning: str | None
    section: str


def write_html(path: str | os.PathLike, views: Sequence[CaseView], title: str | None = None):
    """Write the page for `views` at `path` (atomically) and return the path."""
    return write_page(path, [fragment(n, view) for n, view in enumerate(views)], title)


def write_page(path: str | os.PathLike, fragments: Sequence[Fragment], title: str | None = None):
    """Write a page of already rendered case fragments (atomically)."""
    page = assemble(fragments, title)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)


def render_html(views: Sequence[CaseView], title: str | None = None) -> str:
    return assemble([fragment(n, view) for n, view in enumerate(views)], title)


def fragment(number: int, view: CaseView) -> Fragment:
    """Render case `number` of a page (its anchor is ``case-<number>``)."""
    result = view.result
    return Fragment(
        case_id=str(result.case_id),
        label=str(result.label),
        probability=float(result.probability),
        malignancy=result.malignancy,
        warning=view.algorithm.warning,
        section=_case_section(number, view),
    )


def assemble(fragments: Sequence[Fragment], title: str | None = None) -> str:
    if not fragments:
        raise ValueError("a case view needs at least one case")
    title = title or (
        f"tumorchar case {fragments[0].case_id}"
        if len(fragments) == 1
        else f"tumorchar: {len(fragments)} cases"
    )
    warnings = {f.warning for f in fragments if f.warning}
    banner = "".join(f'<p class="warning" role="alert">{_e(w)}</p>' for w in sorted(warnings))
    summary = _summary(fragments) if len(fragments) > 1 else ""
    return _PAGE.format(
        title=_e(title),
        style=_STYLE,
        banner=banner,
        summary=summary,
        sections="\n".join(f.section for f in fragments),
        script=_SCRIPT,
    )


# --------------------------------------------------------------------------- sections


def _summary(fragments: Sequence[Fragment]) -> str:
    rows = "".join(
        f'<tr><td><a href="#case-{n}">{_e(f.case_id)}</a></td>'
        f"<td>{_e(f.label)}</td><td>{f.probability:.3f}</td>"
        f"<td>{_score_text(f.malignancy)}</td></tr>"
        for n, f in enumerate(fragments)
    )
    return (
        '<table class="summary"><thead><tr><th>case</th><th>class</th><th>probability</th>'
        f"<th>malignancy</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _case_section(number: int, view: CaseView) -> str:
    result = view.result
    views = "".join(
        _view_block(f"case-{number}-{name}", name, frames)
        for name, frames in _all_frames(view).items()
    )
    toggle = ""
    if view.heatmap is not None:
        toggle = (
            f'<label class="toggle"><input type="checkbox" class="toggle-heat" checked '
            f'data-case="case-{number}"> heatmap ({_e(view.heatmap_method or "")})</label>'
        )
    return f"""
<section class="case" id="case-{number}">
  <h2>case {_e(result.case_id)}</h2>
  <p class="verdict">class <strong class="label-{_e(result.label)}">{_e(result.label)}</strong>,
  probability-like score {result.probability:.3f}
  <span class="dim">({_e(result.probability_method)})</span></p>
  {toggle}
  <div class="views">{views}</div>
  {_scores(view)}
  {_provenance(view)}
</section>"""


def _scores(view: CaseView) -> str:
    result = view.result
    scores = {"malignancy": result.malignancy} if result.malignancy is not None else {}
    scores |= dict(result.attributes)
    if not scores:
        return '<p class="dim">This model scores no attributes (class and probability only).</p>'
    rows = []
    for task, value in scores.items():
        low, high = view.score_ranges.get(task, (1.0, 5.0))
        where = 100.0 * (float(value) - low) / (high - low)
        ends = SCALE_ANCHORS.get(task, ("", ""))
        ticks = "".join(
            f'<span class="tick" style="left:{100.0 * (t - low) / (high - low):.1f}%">{t:g}</span>'
            for t in np.arange(low, high + 0.5)
        )
        rows.append(
            f'<tr><th scope="row">{_e(task)}</th><td class="num">{float(value):.2f}</td>'
            f'<td><div class="scale" role="img" aria-label="{_e(task)} {float(value):.2f} on '
            f'{low:g} to {high:g}"><div class="marker" style="left:{where:.1f}%"></div>{ticks}'
            f'</div><div class="anchors"><span>{low:g}: {_e(ends[0])}</span>'
            f"<span>{high:g}: {_e(ends[1])}</span></div></td></tr>"
        )
    return (
        '<table class="scores"><caption>predicted scores on the LIDC rating scales'
        f"</caption>{''.join(rows)}</table>"
    )


def _provenance(view: CaseView) -> str:
    a, result = view.algorithm, view.result
    center = ", ".join(f"{v:.1f}" for v in result.region["center_mm"])
    region = f"centre ({center}) mm"
    if result.region.get("kind") == "ct-cube":
        region += f", {result.region['size_mm']:g} mm cube at {result.region['spacing_mm']:g} mm"
    items = {
        "model": a.model_name,
        "tumorchar version": a.version,
        "bundle sha256": a.bundle_sha256,
        "trained": a.parameters()["trained"],
        "training data": "phantom (annotation-driven)" if a.is_phantom else a.training_source,
        "region": region,
        "heatmap": view.heatmap_method or "not made",
    }
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>" for k, v in items.items())
    return f'<table class="provenance"><caption>provenance</caption>{rows}</table>'


def _view_block(block_id: str, name: str, frames: dict) -> str:
    n = len(frames["base"])
    start = frames["start"]
    heat = ""
    if frames["heat"] is not None:
        heat = f'<img class="heat" alt="" src="{frames["heat"][start]}">'
    data = json.dumps({k: frames[k] for k in ("base", "heat", "labels")}).replace("</", "<\\/")
    base = f'<img class="base" alt="{_e(name)} view" src="{frames["base"][start]}">'
    label = f'<span class="slice-label">{_e(frames["labels"][start])}</span>'
    return f"""
<figure class="view" id="{block_id}">
  <div class="stack">{base}{heat}</div>
  <figcaption>{_e(name)}: {label}</figcaption>
  <input type="range" min="0" max="{n - 1}" value="{start}" step="1"
         aria-label="{_e(name)} slice" {"disabled" if n == 1 else ""}>
  <script type="application/json" class="frames">{data}</script>
</figure>"""


# --------------------------------------------------------------------------- images


def _all_frames(view: CaseView) -> dict[str, dict]:
    """Per view name: base and heat PNG data URIs per slice, labels, the starting slice."""
    volume = view.scan.volume
    mask = np.asarray(view.region_mask, bool)
    lo_hi = _window(view)
    box = _field_of_view(mask)
    center_index = np.round(view.scan.index_of(view.result.region["center_mm"])[::-1])
    spacing = volume.spacing
    frames = {}
    # (name, slicing axis, in-plane axes (rows, cols), flip rows: superior up)
    for name, axis, flip in (("axial", 0, False), ("coronal", 1, True), ("sagittal", 2, True)):
        plane_axes = [a for a in range(3) if a != axis]
        extent = [box[a].stop - box[a].start for a in plane_axes]
        if min(extent) < 2:
            continue  # a one-slice scan has no coronal or sagittal view
        through = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        center = int(np.clip(center_index[axis], 0, mask.shape[axis] - 1))
        indices = _pick_slices(through, center)
        base, heat, labels = [], [] if view.heatmap is not None else None, []
        coords = volume.axes_mm()[axis]
        for position, index in enumerate(indices):
            cut = [box[0], box[1], box[2]]
            cut[axis] = index
            cut = tuple(cut)
            pixel = (spacing[plane_axes[0]], spacing[plane_axes[1]])
            image = _square(volume.array[cut], pixel, order=1, flip=flip)
            outline = _outline(_square(mask[cut].astype(np.float32), pixel, 1, flip) >= 0.5)
            base.append(_png_uri(_gray_rgb(image, lo_hi, outline)))
            if heat is not None:
                heat.append(_png_uri(_heat_rgba(_square(view.heatmap[cut], pixel, 1, flip))))
            labels.append(
                f"slice {position + 1}/{len(indices)} (index {index}, {coords[index]:.1f} mm)"
            )
        start = int(np.argmin(np.abs(np.asarray(indices) - center)))
        frames[name] = {"base": base, "heat": heat, "labels": labels, "start": start}
    return frames


def _field_of_view(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The region's bounding box grown by FIELD_MARGIN of its size on each side."""
    box = []
    for axis in range(3):
        used = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = int(used[0]), int(used[-1]) + 1
        grow = int(np.ceil(FIELD_MARGIN * (hi - lo)))
        box.append(slice(max(0, lo - grow), min(mask.shape[axis], hi + grow)))
    return tuple(box)


def _pick_slices(through: np.ndarray, center: int) -> list[int]:
    """At most MAX_SLICES evenly spaced slices of `through`, always with the centre slice."""
    if through.size <= MAX_SLICES:
        picked = set(through.tolist())
    else:
        picked = set(through[np.linspace(0, through.size - 1, MAX_SLICES - 1).round().astype(int)])
    picked.add(center)
    return sorted(int(i) for i in picked)


def _square(plane: np.ndarray, pixel_mm, order: int, flip: bool) -> np.ndarray:
    """Resample a plane to square pixels with VIEW_PIXELS on its long physical side."""
    from scipy.ndimage import zoom

    plane = np.asarray(plane, np.float32)
    height, width = plane.shape[0] * pixel_mm[0], plane.shape[1] * pixel_mm[1]
    step = max(height, width) / VIEW_PIXELS
    factors = (pixel_mm[0] / step, pixel_mm[1] / step)
    out = zoom(plane, factors, order=order, mode="nearest", grid_mode=True)
    return out[::-1] if flip else out


def _window(view: CaseView) -> tuple[float, float]:
    if view.result.modality == "ct":
        return CT_WINDOW
    values = view.scan.volume.array[_field_of_view(np.asarray(view.region_mask, bool))]
    lo, hi = np.percentile(values, (1, 99))
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, iterations=1, border_value=0)


def _gray_rgb(image: np.ndarray, lo_hi, outline: np.ndarray) -> np.ndarray:
    lo, hi = lo_hi
    gray = (np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgb[outline] = OUTLINE_RGB
    return rgb


def _heat_rgba(heat: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] → RGBA: the 'inferno' colour map, opacity rising with the value."""
    from matplotlib import colormaps

    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    rgba = colormaps["inferno"](heat)
    rgba[..., 3] = np.where(heat > 0.15, 0.15 + 0.45 * heat, 0.0)  # faint heat stays unpainted
    return (rgba * 255).astype(np.uint8)


def _png_uri(pixels: np.ndarray) -> str:
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, pixels, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _score_text(value) -> str:
    return "" if value is None else f"{float(value):.2f}"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
{banner}
{summary}
{sections}
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 0; }
.warning { background: #fff3cd; border: 2px solid #d39e00; padding: .6em .9em; font-weight: 600; }
.case { background: #fff; border: 1px solid #ddd; padding: 1em; margin: 1em 0; }
.views { display: flex; flex-wrap: wrap; gap: 1em; }
.view { margin: 0; }
.stack { position: relative; width: 320px; height: 320px; background: #000; }
.stack img { position: absolute; left: 0; top: 0; width: 100%; height: 100%;
  object-fit: contain; }
.view input[type=range] { width: 320px; }
.dim { color: #666; font-size: .9em; }
.label-malignant, .label-ipmn { color: #b00020; } .label-benign, .label-normal { color: #1b6e20; }
table { border-collapse: collapse; margin: .8em 0; } caption { text-align: left; font-weight: 600; }
th, td { padding: .25em .6em; text-align: left; vertical-align: middle; }
.provenance th { font-weight: normal; color: #555; }
.provenance td { font-family: ui-monospace, monospace; font-size: .85em; word-break: break-all; }
.num { font-variant-numeric: tabular-nums; text-align: right; }
.scale { position: relative; width: 300px; height: 12px; margin: 10px 0 14px;
  background: linear-gradient(to right, #e4e9f2, #9fb3d1); border-radius: 6px; }
.marker { position: absolute; top: -5px; width: 4px; height: 22px; margin-left: -2px;
  background: #111; }
.tick { position: absolute; top: 14px; font-size: .7em; transform: translateX(-50%); }
.anchors { display: flex; justify-content: space-between; width: 300px; font-size: .75em;
  color: #555; margin-top: 6px; }
.summary td, .summary th { border-bottom: 1px solid #ddd; }
"""

_SCRIPT = """
(function () {
  document.querySelectorAll('figure.view').forEach(function (view) {
    var frames = JSON.parse(view.querySelector('script.frames').textContent);
    var base = view.querySelector('img.base');
    var heat = view.querySelector('img.heat');
    var label = view.querySelector('.slice-label');
    var slider = view.querySelector('input[type=range]');
    slider.addEventListener('input', function () {
      var i = Number(slider.value);
      base.src = frames.base[i];
      if (heat && frames.heat) { heat.src = frames.heat[i]; }
      label.textContent = frames.labels[i];
    });
  });
  document.querySelectorAll('input.toggle-heat').forEach(function (box) {
    box.addEventListener('change', function () {
      var section = document.getElementById(box.dataset.case);
      section.querySelectorAll('img.heat').forEach(function (img) {
        img.style.visibility = box.checked ? 'visible' : 'hidden';
      });
    });
  });
})();
"""
