import numpy as np
import pandas as pd
import pytest
from data_builders import cohort_row, ellipsoid, make_cohort, write_ct_series
from typer.testing import CliRunner

from tumorchar.cli import app
from tumorchar.data.cohort_store import ConsensusMask, write_cohort
from tumorchar.data.ct_patches import PatchGeometry, build_lidc_store, build_phantom_store
from tumorchar.data.patches import PatchStore
from tumorchar.data.phantom import PHANTOM_NOTE

GEOMETRY = PatchGeometry(spacing_mm=0.5, size_mm=24.0)


def test_phantom_store_from_cohort(small_cohort, tmp_path):
    report = build_phantom_store(
        small_cohort, tmp_path / "s", geometry=GEOMETRY, show_progress=False
    )
    assert not report.failures and len(report.written) == 3
    store = PatchStore(tmp_path / "s")
    assert store.is_phantom and store.source == "phantom" and store.note == PHANTOM_NOTE
    assert store.volumes().shape == (3, 48, 48, 48)
    index = store.index.set_index("case_id")
    assert (index["source"] == "phantom").all() and (index["spacing_mm"] == 0.5).all()
    # first nodule: ellipsoid of semi-axes (5, 4, 6) mm, volume 4/3·π·120 mm³
    patch = store.load("LIDC-IDRI-0000_n01")
    volume_mm3 = patch.mask.sum() * 0.5**3
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * 120, rel=0.12)
    assert patch.mask[24, 24, 24]  # centred
    assert index.loc["LIDC-IDRI-0000_n01", "calcification"] == 3.0


def test_phantom_store_is_deterministic(small_cohort, tmp_path):
    for name in ("a", "b"):
        build_phantom_store(
            small_cohort,
            tmp_path / name,
            seed=5,
            geometry=GEOMETRY,
            show_progress=False,
            workers=1 if name == "a" else 2,
        )
    assert PatchStore(tmp_path / "a").content_hash == PatchStore(tmp_path / "b").content_hash


def test_empty_mask_fails_by_name_and_the_rest_is_built(tmp_path):
    good = ellipsoid((5, 15, 15), (2.0, 0.7, 0.7), (4.0, 4.0, 4.0))
    cohort = make_cohort(
        tmp_path / "cohort",
        {
            "LIDC-IDRI-0001_n01": (good, -10 + 2.0 * np.arange(5), (50, 60), 0.7, 2.0, {}),
            "LIDC-IDRI-0002_n01": (
                np.zeros((3, 4, 4), bool),
                [0.0, 2.0, 4.0],
                (5, 5),
                0.7,
                2.0,
                {},
            ),
        },
    )
    report = build_phantom_store(cohort, tmp_path / "s", geometry=GEOMETRY, show_progress=False)
    assert report.written == ["LIDC-IDRI-0001_n01"]
    assert report.failures == {
        "LIDC-IDRI-0002_n01": "case LIDC-IDRI-0002_n01: empty consensus mask"
    }
    assert not (tmp_path / "s" / "arrays" / "LIDC-IDRI-0002_n01.npz").exists()


def _lidc_download(tmp_path, centre_ij, n_slices=24):
    """A TCIA-like tree with one 64×64 scan holding a +40 HU sphere of radius 5 mm."""
    ps, dz = 0.7, 1.25
    origin = (-22.4, -30.0, -200.0)
    shape = (n_slices, 64, 64)
    sphere = ellipsoid(shape, (dz, ps, ps), (5.0, 5.0, 5.0), centre_index=(12, *centre_ij))
    hu = np.where(sphere, 40.0, -850.0)
    series = tmp_path / "LIDC" / "LIDC-IDRI-0007" / "01-01-2000-study" / "3000-series"
    write_ct_series(series, hu, (dz, ps, ps), origin, "1.3.6.1.7")
    zs, ys, xs = (np.flatnonzero(sphere.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    box = sphere[zs[0] : zs[-1] + 1, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    z_mm = origin[2] + dz * np.arange(zs[0], zs[-1] + 1)
    return tmp_path / "LIDC", ConsensusMask(box, z_mm, (int(ys[0]), int(xs[0])), ps), dz


def _lidc_cohort(tmp_path, mask, dz, series_uid="1.3.6.1.7"):
    row = cohort_row("LIDC-IDRI-0007_n01", 0.7, dz)
    row["series_uid"] = series_uid
    return write_cohort(pd.DataFrame([row]), {"LIDC-IDRI-0007_n01": mask}, tmp_path / "cohort")


def test_lidc_crop_centres_the_nodule_with_its_mask(tmp_path):
    lidc, mask, dz = _lidc_download(tmp_path, (32, 30))
    cohort = _lidc_cohort(tmp_path, mask, dz)
    report = build_lidc_store(cohort, lidc, tmp_path / "s", GEOMETRY, show_progress=False)
    assert not report.failures
    store = PatchStore(tmp_path / "s")
    patch = store.load("LIDC-IDRI-0007_n01")
    assert store.source == "lidc" and not store.is_phantom
    assert patch.volume.shape == (48, 48, 48)
    bright = patch.volume > -405  # half-way between nodule and lung
    dice = 2 * (bright & patch.mask).sum() / (bright.sum() + patch.mask.sum())
    assert dice > 0.9
    assert patch.volume[24, 24, 24] == pytest.approx(40.0, abs=1.0)
    assert store.index["padded_fraction"].iloc[0] == 0.0


def test_lidc_nodule_near_the_border_is_padded_with_air(tmp_path):
    lidc, mask, dz = _lidc_download(tmp_path, (32, 6))
    cohort = _lidc_cohort(tmp_path, mask, dz)
    build_lidc_store(cohort, lidc, tmp_path / "s", GEOMETRY, show_progress=False)
    store = PatchStore(tmp_path / "s")
    patch = store.load("LIDC-IDRI-0007_n01")
    padded = store.index["padded_fraction"].iloc[0]
    assert 0.1 < padded < 0.5
    assert (patch.volume == -1000.0).mean() == pytest.approx(padded)
    assert patch.mask.sum() > 0


def test_lidc_missing_scan_is_a_listed_failure(tmp_path):
    lidc, mask, dz = _lidc_download(tmp_path, (32, 30))
    cohort = _lidc_cohort(tmp_path, mask, dz, series_uid="9.9.9")
    report = build_lidc_store(cohort, lidc, tmp_path / "s", GEOMETRY, show_progress=False)
    assert "LIDC-IDRI-0007_n01" in report.failures["LIDC-IDRI-0007_n01"]
    assert "not found" in report.failures["LIDC-IDRI-0007_n01"]
    assert PatchStore(tmp_path / "s", allow_incomplete=True).case_ids == []


def test_cli_phantom_then_resume(small_cohort, tmp_path):
    runner = CliRunner()
    args = [
        "patches",
        "phantom",
        "--cohort",
        str(small_cohort),
        "--out",
        str(tmp_path / "s"),
        "--size-mm",
        "16",
        "--seed",
        "1",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "PHANTOM DATA" in first.output and "3 written" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "3 already there" in second.output
    other = runner.invoke(app, [*args[:-1], "2"])
    assert other.exit_code == 2 and "another output folder" in other.output


def test_cli_reports_failures_with_exit_code(tmp_path):
    cohort = make_cohort(
        tmp_path / "cohort",
        {
            "LIDC-IDRI-0002_n01": (np.zeros((2, 3, 3), bool), [0.0, 2.0], (5, 5), 0.7, 2.0, {}),
        },
    )
    result = CliRunner().invoke(
        app, ["patches", "phantom", "--cohort", str(cohort), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 1
    assert "LIDC-IDRI-0002_n01: empty consensus mask" in result.output


def test_cli_missing_cohort_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        app, ["patches", "phantom", "--cohort", str(tmp_path / "no"), "--out", str(tmp_path / "s")]
    )
    text = " ".join(result.output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())
    assert result.exit_code == 2 and "--cohort" in text and "does not exist" in text
    (tmp_path / "empty").mkdir()
    empty = ["patches", "phantom", "--cohort", str(tmp_path / "empty"), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, empty)
    assert result.exit_code == 2 and "cohort.parquet" in result.output


def test_lidc_mask_off_the_scan_slices_is_refused(tmp_path):
    lidc, mask, dz = _lidc_download(tmp_path, (32, 30))
    shifted = ConsensusMask(mask.mask, mask.z_mm + 0.5, mask.origin_ij, mask.pixel_spacing_mm)
    cohort = _lidc_cohort(tmp_path, shifted, dz)
    report = build_lidc_store(cohort, lidc, tmp_path / "s", GEOMETRY, show_progress=False)
    message = report.failures["LIDC-IDRI-0007_n01"]
    assert message == "case LIDC-IDRI-0007_n01: mask slice positions are not slices of the scan"


def test_mask_slices_in_decreasing_z_are_sorted_and_repeats_refused(tmp_path):
    good = ellipsoid((5, 15, 15), (2.0, 0.7, 0.7), (4.0, 4.0, 4.0))
    cohort = make_cohort(
        tmp_path / "cohort",
        {
            "LIDC-IDRI-0001_n01": (good, 10 - 2.0 * np.arange(5), (50, 60), 0.7, 2.0, {}),
            "LIDC-IDRI-0002_n01": (good, [0.0, 2.0, 2.0, 4.0, 6.0], (50, 60), 0.7, 2.0, {}),
            "LIDC-IDRI-0003_n01": (good, [0.0, 2.0], (50, 60), 0.7, 2.0, {}),
        },
    )
    report = build_phantom_store(cohort, tmp_path / "s", geometry=GEOMETRY, show_progress=False)
    assert report.written == ["LIDC-IDRI-0001_n01"]
    assert "not strictly increasing" in report.failures["LIDC-IDRI-0002_n01"]
    assert "5 slices but 2 slice positions" in report.failures["LIDC-IDRI-0003_n01"]
