import numpy as np
import pandas as pd
import pytest

from tumorchar.data.cohort_store import ConsensusMask, load_cohort, write_cohort


def test_round_trip(tmp_path):
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 1:3, 2:4] = True
    table = pd.DataFrame({"nodule_id": ["c1"], "pixel_spacing_mm": [0.7]})
    write_cohort(
        table, {"c1": ConsensusMask(mask, np.array([-10.0, -8.5, -7.0]), (40, 50), 0.7)}, tmp_path
    )
    cohort = load_cohort(tmp_path)
    got = cohort.mask("c1")
    assert cohort.nodule_ids == ["c1"]
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_allclose(got.z_mm, [-10.0, -8.5, -7.0])
    assert got.origin_ij == (40, 50) and got.pixel_spacing_mm == 0.7
    assert not list(tmp_path.glob("*tmp*"))


def test_missing_mask_is_refused(tmp_path):
    table = pd.DataFrame({"nodule_id": ["c1"], "pixel_spacing_mm": [0.7]})
    with pytest.raises(ValueError, match="no mask"):
        write_cohort(table, {}, tmp_path)


def test_missing_folder_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cohort.parquet"):
        load_cohort(tmp_path)
