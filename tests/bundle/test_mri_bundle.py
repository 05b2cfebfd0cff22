"""An MRI (IPMN vs normal) bundle: trained on a synthetic MRI store, applied to a region."""

import numpy as np
import pytest
from pydicom.data import get_testdata_file

import tumorchar
from tumorchar.bundle.scan import ScanError

pytestmark = pytest.mark.slow  # builds a small MRI store (N4 + diffusion) and trains


def test_mri_bundle_says_normal_or_ipmn_for_a_mask_or_a_point(mri_setup):
    from tumorchar.data.io import read_image

    images, bundle = mri_setup
    model = tumorchar.load_model(bundle)
    assert (model.kind, model.modality) == ("unsupervised", "mri")
    assert model.manifest["classes"] == ["normal", "ipmn"]
    image = images / "SYNMRI-0008.nii.gz"
    roi = images / "SYNMRI-0008_roi.nii.gz"
    from_mask = model.predict(image, mask=roi)
    assert from_mask.label in ("normal", "ipmn") and 0.0 <= from_mask.probability <= 1.0
    assert from_mask.region["kind"] == "mri-roi" and from_mask.region["n_slices"] >= 1
    mask = read_image(roi).array > 0
    k = int(np.flatnonzero(mask.any(axis=(1, 2))).mean())
    j, i = np.argwhere(mask[k]).mean(axis=0)
    from_point = model.predict(image, at=(i, j, k), units="voxel")
    assert from_point.label in ("normal", "ipmn") and from_point.region["n_slices"] == 1


def test_ct_scan_is_refused_by_an_mri_model(mri_setup):
    _, bundle = mri_setup
    with pytest.raises(ScanError, match="trained on MRI but its header says CT"):
        tumorchar.load_model(bundle).predict(
            get_testdata_file("CT_small.dcm"), at=(5, 5, 0), units="voxel"
        )
