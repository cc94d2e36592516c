import numpy as np
import pytest

from companion import data_stats


def test_input_stats_on_hand_made_data():
    x = np.zeros((4, 3))
    x[:, 1] = [1.0, 2.0, 3.0, 4.0]  # features 0 and 2 are constant
    s = data_stats.input_stats(x)
    assert (s.mean, s.min, s.max) == (pytest.approx(2.5 / 3), 0.0, 4.0)
    assert s.std == pytest.approx(np.std(x))
    assert s.constant_features == 2 and s.non_finite == 0 and s.warnings == ()
    raw = data_stats.input_stats(x * 60)  # up to 240: pixels in [0, 255]
    assert len(raw.warnings) == 1 and "divide by 255" in raw.warnings[0]
    signed = data_stats.input_stats(x * -60)
    assert "check the scaling" in signed.warnings[0] and "255" not in signed.warnings[0]
    shifted = data_stats.input_stats(np.random.default_rng(0).random((50, 4)) + 5)
    assert len(shifted.warnings) == 1 and "subtract the mean" in shifted.warnings[0]
    x[0, 0] = np.nan
    nan = data_stats.input_stats(x)
    assert nan.non_finite == 1 and "1 values are NaN or infinite" in nan.warnings
    assert nan.max == 4.0  # statistics over the finite values
    # feature 0 now holds a NaN and 0s: not one value in every example; feature 2
    # still is (the count by hand, over the features with every value finite)
    by_hand = sum(np.isfinite(col).all() and len(set(col.tolist())) == 1 for col in x.T)
    assert nan.constant_features == by_hand == 1


def test_confusion_matrix_against_counting():
    rng = np.random.default_rng(0)
    t, q = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    cm = data_stats.confusion_matrix(t, q, 5)
    for i in range(5):
        for j in range(5):
            assert cm[i, j] == np.sum((t == i) & (q == j))
    with pytest.raises(ValueError, match="y_pred must lie in"):
        data_stats.confusion_matrix(t, np.where(q == 4, 5, q), 5)


def test_bad_batches_are_named():
    with pytest.raises(ValueError, match="x must be a batch"):
        data_stats.input_stats(np.ones(5))
    with pytest.raises(ValueError, match="an empty batch"):
        data_stats.check_batch(np.ones((0, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        data_stats.check_batch(np.array([["a"], ["b"]]))
