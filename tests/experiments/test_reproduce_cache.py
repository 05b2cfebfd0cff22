"""`reproduce` reuses exactly the stages whose inputs did not change (issue 11's stale-cache
sequence: E3 was reused after --vgg-bf16 recomputed the VGG features)."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from tumorchar.cli import app

# --allow-random-init: VGG16 (no ImageNet file here) runs at its seeded initialization
ARGS = ["--data", "none", "--mri-cases", "20", "--mri-shape", "8,64,64", "--experiments", "E3",
        "--folds", "3", "--psvm-restarts", "1", "--allow-random-init"]  # fmt: skip


def _stages(out) -> dict[str, bool]:
    results = pd.read_parquet(out / "results.parquet")
    rows = results[(results["experiment"] == "stage") & (results["metric"] == "cached")]
    return dict(zip(rows["method"], rows["value"] > 0, strict=True))


@pytest.mark.slow
def test_toggling_bf16_recomputes_vgg_and_e3_and_nothing_upstream(tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ["--no-progress", "reproduce", "--out", str(tmp_path), *ARGS])
    assert first.exit_code == 0, first.output
    assert not any(_stages(tmp_path).values())
    e3_before = pd.read_parquet(tmp_path / "results.parquet").query("experiment == 'E3'")

    second = runner.invoke(
        app, ["--no-progress", "reproduce", "--out", str(tmp_path), *ARGS, "--vgg-bf16"]
    )
    assert second.exit_code == 0, second.output
    cached = _stages(tmp_path)
    recomputed = {name for name, reused in cached.items() if not reused}
    assert recomputed == {"features: VGG16 fc7/fc8, random-init (mri)", "experiment E3_mri"}
    assert cached["synthetic MRI"] and cached["patches: MRI (synthetic)"]
    e3_after = pd.read_parquet(tmp_path / "results.parquet").query("experiment == 'E3'")
    # the rows' settings hash covers the whole chain, so the bf16 rows say they are new
    assert set(e3_before["settings_hash"]).isdisjoint(e3_after["settings_hash"])
    assert "bfloat16" in (tmp_path / "report.md").read_text()
