"""E1 score helpers: clipping to 1-5, accuracy within one point, mean absolute difference."""

import numpy as np
import pytest

from tumorchar.models.scoring import (
    accuracy_within_one,
    clip_scores,
    mean_absolute_score_difference,
)


def test_clip_scores_to_the_rating_scale():
    np.testing.assert_array_equal(clip_scores([-0.5, 1.0, 3.2, 5.0, 7.1]), [1, 1, 3.2, 5, 5])
    with pytest.raises(ValueError, match="must not exceed"):
        clip_scores([1.0], low=5, high=1)


def test_accuracy_counts_predictions_within_one_point_inclusive():
    truth = np.array([7 / 3, 3.0, 1.0, 4.5])
    pred = np.array([truth[0] + 1.0, 4.2, 1.0, 2.0])  # within (boundary), out, exact, out
    assert accuracy_within_one(truth, pred) == pytest.approx(0.5)
    assert accuracy_within_one(np.ones((2, 3)), np.full((2, 3), 2.0)) == 1.0


def test_mean_absolute_score_difference_and_input_checks():
    assert mean_absolute_score_difference([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="different shapes"):
        mean_absolute_score_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        accuracy_within_one([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        accuracy_within_one([], [])
