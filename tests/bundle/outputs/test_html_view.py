"""The HTML case view: self-contained, says what it must, and works in a real browser."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from output_builders import IDENTITY, make_algorithm, make_result

from tumorchar.bundle.outputs.algorithm import PHANTOM_WARNING
from tumorchar.bundle.outputs.html import CaseView, render_html, write_html
from tumorchar.bundle.scan import read_scan

CHROMIUM = os.environ.get("TUMORCHAR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TUMORCHAR_CHROMEDRIVER", "/usr/bin/chromedriver")
RANGES = {"calcification": (1.0, 6.0)} | {
    t: (1.0, 5.0)
    for t in ("malignancy", "spiculation", "sphericity", "lobulation", "margin", "texture")
}


def case_view(dicom_series, phantom=True, heat=True, case_id="case007") -> CaseView:
    folder, _, _, mask, center = dicom_series
    scan = read_scan(folder)
    heatmap = None
    if heat:
        grids = np.indices(mask.shape)
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, (8, 15, 17), strict=True)))
        heatmap = np.exp(-(distance**2) / 20.0).astype(np.float32)
    return CaseView(
        result=make_result(center, case_id=case_id),
        scan=scan,
        region_mask=mask,
        algorithm=make_algorithm(is_phantom=phantom),
        score_ranges=RANGES,
        heatmap=heatmap,
        heatmap_method="grad-cam (network.conv4b)" if heat else None,
    )


def test_page_is_self_contained_and_complete(dicom_series):
    page = render_html([case_view(dicom_series)])
    assert PHANTOM_WARNING in page
    # no external resource: every src / href is a data URI or an in-page anchor
    for target in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert target.startswith(("data:", "#")), target
    assert "http://" not in page and "https://" not in page
    for name in ("axial", "coronal", "sagittal"):
        assert f"{name} view" in page
    for task in RANGES:
        assert f">{task}<" in page
    assert "4.25" in page and "0.812" in page and "malignant" in page
    assert "ab12" * 16 in page  # bundle digest in the provenance
    assert "highly suspicious" in page  # the scale's anchor meaning
    for value in IDENTITY.values():
        assert value not in page  # the page names the case by id, never by header values


def test_real_data_model_page_has_no_warning_and_heat_is_optional(dicom_series):
    page = render_html([case_view(dicom_series, phantom=False, heat=False)])
    assert PHANTOM_WARNING not in page and 'role="alert"' not in page
    assert '<img class="heat"' not in page and 'class="toggle-heat"' not in page


def test_batch_page_has_one_section_per_case(dicom_series, tmp_path):
    views = [case_view(dicom_series, case_id=c) for c in ("first", "second")]
    path = write_html(tmp_path / "batch.html", views)
    page = path.read_text()
    assert page.count('<section class="case"') == 2
    assert 'href="#case-0"' in page and 'href="#case-1"' in page
    assert page.count(PHANTOM_WARNING) == 1  # one banner for the page


def _browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        how = "apt-get install chromium chromium-driver" if shutil.which("apt-get") else "no apt"
        pytest.skip(
            f"Chromium / chromedriver not installed at {CHROMIUM}, {CHROMEDRIVER} "
            f"(`make test` installs them with {how} when it runs as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_page_works_in_headless_chromium(dicom_series, tmp_path):
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path = write_html(tmp_path / "case.html", [case_view(dicom_series)])
    driver = _browser(tmp_path)
    try:
        driver.get(path.resolve().as_uri())
        assert driver.title == "tumorchar case case007"
        axial = driver.find_element(By.ID, "case-0-axial")
        image = axial.find_element(By.CSS_SELECTOR, "img.base")
        heat = axial.find_element(By.CSS_SELECTOR, "img.heat")
        label = axial.find_element(By.CSS_SELECTOR, ".slice-label")
        slider = axial.find_element(By.CSS_SELECTOR, "input[type=range]")
        before = (image.get_attribute("src"), heat.get_attribute("src"), label.text)
        start = int(slider.get_attribute("value"))
        slider.send_keys(Keys.ARROW_RIGHT)
        assert int(slider.get_attribute("value")) == start + 1
        after = (image.get_attribute("src"), heat.get_attribute("src"), label.text)
        assert all(b != a for b, a in zip(before, after, strict=True))
        loaded = driver.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded
        toggle = driver.find_element(By.CSS_SELECTOR, "input.toggle-heat")
        toggle.click()
        assert heat.value_of_css_property("visibility") == "hidden"
        toggle.click()
        shot = tmp_path / "screenshot.png"
        assert driver.save_screenshot(str(shot))
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        driver.quit()
    pixels = imread(shot)
    assert shot.stat().st_size > 10_000 and pixels.shape[0] > 500
    assert pixels[..., :3].std() > 0.05  # not a blank page
    keep = os.environ.get("TUMORCHAR_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
