from dataclasses import replace

import numpy as np
import pytest
from data_builders import ellipsoid
from scipy import ndimage

from tumorchar.data.phantom import (
    DEFAULT_RULES,
    PhantomRules,
    case_rng,
    correlated_noise,
    draw_ratings,
    render_nodule,
)

# the rating rules at their nominal tissue levels (no per-nodule spread)
NOMINAL = replace(DEFAULT_RULES, ground_glass_hu_sd=0.0, solid_hu_sd=0.0, calcified_hu_sd=0.0)

SPACING = 0.5
N = 48
MASK = ellipsoid((N, N, N), (SPACING,) * 3, (5.0, 5.0, 5.0))
CORE = ndimage.binary_erosion(MASK, iterations=5)  # beyond the margin blur
FAR = ~ndimage.binary_dilation(MASK, iterations=12)


def render(seed=0, case="c1", mask=MASK, rules=NOMINAL, **scores):
    full = {"texture": 5.0, "calcification": 6.0, "margin": 3.0}
    full.update(scores)
    return render_nodule(mask, full, SPACING, case_rng(seed, case), rules)


def test_rating_rules_at_their_end_points():
    rules = DEFAULT_RULES
    assert rules.solid_fraction(1.0) == 0.0
    assert rules.solid_fraction(3.0) == pytest.approx(0.5)
    assert rules.solid_fraction(5.0) == 1.0
    assert rules.margin_blur_mm(1.0) == pytest.approx(rules.widest_margin_blur_mm)
    assert rules.margin_blur_mm(5.0) == pytest.approx(rules.sharpest_margin_blur_mm)
    assert rules.margin_blur_mm(2.0) > rules.margin_blur_mm(4.0)
    assert rules.calcification(6.0) is None
    assert rules.calcification(5.7) is None
    assert rules.calcification(5.0) == (5, pytest.approx(520.0))
    assert rules.calcification(1.0) == (1, pytest.approx(1000.0))
    assert rules.calcification(2.6)[0] == 3


def test_texture_maps_ground_glass_to_solid():
    solid = render(texture=5.0)
    ground_glass = render(texture=1.0)
    part_solid = render(texture=3.0)
    assert np.median(solid[CORE]) == pytest.approx(DEFAULT_RULES.solid_hu, abs=40)
    assert np.median(ground_glass[CORE]) == pytest.approx(DEFAULT_RULES.ground_glass_hu, abs=60)
    # part-solid: a solid centre inside a ground-glass rim
    centre = ellipsoid((N, N, N), (SPACING,) * 3, (1.5, 1.5, 1.5))
    rim = ndimage.binary_erosion(MASK, iterations=3) & ~ndimage.binary_erosion(MASK, iterations=5)
    assert np.median(part_solid[centre]) > -100
    assert np.median(part_solid[rim]) < -400


def test_lung_background_and_noise_level():
    image = render()
    assert image.dtype == np.float32 and image.shape == MASK.shape
    far = image[FAR]
    assert np.median(far) == pytest.approx(DEFAULT_RULES.parenchyma_hu, abs=30)
    assert 10 < np.percentile(far, 50) - np.percentile(far, 16) < 100  # noisy, not flat


def test_calcification_adds_dense_core():
    none = render(calcification=6.0)
    central = render(calcification=5.0)
    solid = render(calcification=3.0)
    centre = ellipsoid((N, N, N), (SPACING,) * 3, (1.0, 1.0, 1.0))
    assert np.median(none[centre]) < 200
    assert np.median(central[centre]) >= 400
    assert np.median(solid[CORE]) >= 400
    for pattern in (1.0, 2.0, 4.0):
        image = render(calcification=pattern)
        assert (image[MASK] > 400).mean() > 0.01, pattern
        assert (image[FAR] > 400).mean() < 0.001


def test_margin_rating_sets_boundary_blur():
    shell = ndimage.binary_dilation(MASK, iterations=3) & ~ndimage.binary_dilation(MASK)
    ill_defined = render(margin=1.0)
    sharp = render(margin=5.0)
    # a wide blur spreads nodule intensity into the lung just outside the boundary
    assert np.mean(ill_defined[shell]) > np.mean(sharp[shell]) + 50


def test_deterministic_per_seed_and_case():
    np.testing.assert_array_equal(render(seed=3, case="a"), render(seed=3, case="a"))
    assert not np.array_equal(render(seed=3, case="a"), render(seed=4, case="a"))
    assert not np.array_equal(render(seed=3, case="a"), render(seed=3, case="b"))


def test_correlated_noise_is_unit_variance_and_smooth():
    field = correlated_noise((40, 40, 40), 0.5, 1.5, np.random.default_rng(0))
    assert field.std() == pytest.approx(1.0, abs=0.25)
    neighbour = np.corrcoef(field[:, :, :-1].ravel(), field[:, :, 1:].ravel())[0, 1]
    assert neighbour > 0.8


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="empty"):
        render(mask=np.zeros_like(MASK))


def test_tissue_levels_differ_between_nodules():
    """Default rules: each nodule's solid level is drawn around the nominal one, so the same
    ratings do not give the same HU (the levels no longer encode the ratings exactly)."""
    medians = [np.median(render(case=f"n{i}", rules=DEFAULT_RULES)[CORE]) for i in range(8)]
    assert np.std(medians) > 20
    assert abs(np.mean(medians) - DEFAULT_RULES.solid_hu) < 3 * DEFAULT_RULES.solid_hu_sd
    assert NOMINAL.for_nodule(np.random.default_rng(0)) == NOMINAL


READERS = {
    "texture": 3.0,
    "calcification": 4.75,
    "margin": 3.5,
    "reader_texture": [5, 1, 3, 3],
    "reader_calcification": [6, 6, 6, 1],
    "reader_margin": [5, 2, 4, 3],
}


def test_one_reader_is_drawn_with_all_their_ratings():
    triples = {("texture", 5.0), ("texture", 1.0), ("texture", 3.0)}
    seen = []
    for seed in range(200):
        drawn = draw_ratings(READERS, case_rng(seed, "n"))
        r = [
            i
            for i in range(4)
            if READERS["reader_texture"][i] == drawn["texture"]
            and READERS["reader_calcification"][i] == drawn["calcification"]
            and READERS["reader_margin"][i] == drawn["margin"]
        ]
        assert r, drawn  # the three ratings come from one reader
        seen.append(r[0])
        assert ("texture", drawn["texture"]) in triples
    counts = np.bincount(seen, minlength=4)
    assert counts.min() > 25  # every reader is drawn, about uniformly
    again = [draw_ratings(READERS, case_rng(seed, "n")) for seed in range(5)]
    assert again == [draw_ratings(READERS, case_rng(seed, "n")) for seed in range(5)]


def test_mean_rule_and_cohorts_without_reader_lists_use_the_means():
    means = {"texture": 3.0, "calcification": 4.75, "margin": 3.5}
    assert draw_ratings(READERS, case_rng(0, "n"), PhantomRules(ratings="mean")) == means
    assert draw_ratings(means, case_rng(0, "n")) == means
    with pytest.raises(ValueError, match="ratings must be one of"):
        PhantomRules(ratings="median")
