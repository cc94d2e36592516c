import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest

from companion.plotting import BOOK_STYLE, digit_grid, use_book_style


@pytest.fixture(autouse=True)
def restore_style():
    with mpl.rc_context():
        yield
    plt.close("all")


def _render(path):
    fig, ax = plt.subplots(figsize=(2, 2))
    (line,) = ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    return line, ax, plt.imread(path)


def test_the_book_style_shows_in_a_rendered_figure(tmp_path):
    # What a reader sees, not what rcParams say: the saved image, the line colour, the
    # spines.
    _, _, plain = _render(tmp_path / "plain.png")
    use_book_style()
    line, ax, styled = _render(tmp_path / "styled.png")
    assert (
        plain[0, 0, 3] == 1.0 and styled[0, 0, 3] == 0.0
    )  # transparent background: light and dark pages
    assert mpl.colors.to_hex(line.get_color()) == "#1f77b4"
    assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
    assert ax.xaxis.label.get_color() == "#808080" and ax.get_legend() is None
    assert {k for k in BOOK_STYLE} <= set(
        mpl.rcParams
    )  # every key is a real matplotlib setting


@pytest.mark.parametrize("shape", [(10, 784), (10, 28, 28)])
def test_digit_grid_draws_each_image_with_its_label(shape):
    rng = np.random.default_rng(0)
    images = rng.random(shape, dtype=np.float32)
    labels = np.arange(10) % 10
    fig = digit_grid(images, labels, ncols=4, title="digits")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 12 and len(shown) == 10  # 3 rows of 4, two left empty
    for ax, img, lab in zip(shown, images.reshape(10, 28, 28), labels, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), img)
        assert ax.get_title() == str(lab)
    assert fig._suptitle.get_text() == "digits"


def test_digit_grid_refuses_bad_shapes():
    with pytest.raises(
        ValueError, match=r"\(K, 784\) or \(K, 28, 28\); got \(3, 100\)"
    ):
        digit_grid(np.zeros((3, 100)), [0, 1, 2])
    with pytest.raises(
        ValueError, match=r"one label per image: 3 images, labels \(2,\)"
    ):
        digit_grid(np.zeros((3, 784)), [0, 1])
