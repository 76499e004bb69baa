"""tinygan.plots: the sample grid's layout and scaling, what the loss curves draw, and
figures written whole and always freed. Everything here is host-side (NumPy, Matplotlib)."""

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

from tinygan import plots

PNG = b"\x89PNG\r\n\x1a\n"


def cells(grid, rows, cols):
    """(rows, cols, h, w) view of a single-channel grid."""
    h, w = grid.shape[0] // rows, grid.shape[1] // cols
    return grid.reshape(rows, h, cols, w).transpose(0, 2, 1, 3)


def test_image_grid_is_row_major_in_zero_one_with_white_empty_cells():
    """5 images of 2x3 pixels in 2 rows: 3 columns, image i at (i // 3, i % 3), [-1, 1] mapped
    to [0, 1], and the sixth cell left white."""
    values = [-1.0, -0.5, 0.0, 0.5, 1.0]
    images = np.stack([np.full((1, 2, 3), v, np.float32) for v in values])
    grid = plots.image_grid(images, rows=2)
    assert grid.shape == (4, 9)
    expected = [[0.0, 0.25, 0.5], [0.75, 1.0, 1.0]]
    np.testing.assert_array_equal(cells(grid, 2, 3), np.array(expected)[:, :, None, None]
                                  * np.ones((2, 3)))


def test_image_grid_clips_out_of_range_values_and_keeps_colour_channels():
    images = np.array([[[[-3.0]], [[0.0]], [[3.0]]]])  # one 1x1 RGB image
    grid = plots.image_grid(images, rows=1)
    assert grid.shape == (1, 1, 3)
    np.testing.assert_array_equal(grid[0, 0], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("shape, rows, fragment", [
    ((4, 5, 5, 1), 2, "(N, C, H, W) with C = 1 or 3"),  # channels last: C = 5
    ((4, 5, 5), 2, "(N, C, H, W)"),
    ((4, 1, 5, 5), 0, "rows must be a positive int"),
    ((4, 1, 5, 5), 1.5, "rows must be a positive int"),
])
def test_image_grid_refuses_other_layouts_and_row_counts(shape, rows, fragment):
    """Channels-last images made a meaningless (10, 2, 5) picture; rows=0 divided by zero."""
    with pytest.raises(ValueError, match=r"^image_grid: .*" + fragment.replace("(", r"\(")
                       .replace(")", r"\)")):
        plots.image_grid(np.zeros(shape, np.float32), rows)


@pytest.fixture
def drawn(monkeypatch):
    """The figures plots saves, kept for inspection (they are still written and closed)."""
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure",
                        lambda fig, path: figures.append(fig) or save(fig, path))
    return figures


def test_loss_curves_draw_every_record_and_scores_on_a_log_scale_only_when_positive(
        tmp_path, drawn):
    # as a WGAN logs every step: g_loss only in the records of steps with a G update
    history = [{"step": 1, "d_loss": 1.0, "g_loss": 2.0}, {"step": 2, "d_loss": 0.5},
               {"step": 3, "d_loss": 0.25, "g_loss": 1.5}]
    positive = [{"step": 2, "epoch": 1, "fd": 30.0}, {"step": 3, "epoch": 2, "fd": 20.0}]
    plots.save_curves(tmp_path / "a.png", history, positive)
    plots.save_curves(tmp_path / "b.png", history, [{"step": 3, "epoch": 1, "score": -0.5}])
    losses, scores = drawn[0].axes
    assert {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in losses.get_lines()} == {"d_loss": ([1, 2, 3], [1.0, 0.5, 0.25]),
                                                "g_loss": ([1, 3], [2.0, 1.5])}
    assert [list(line.get_ydata()) for line in scores.get_lines()] == [[30.0, 20.0]]
    assert scores.get_yscale() == "log" and drawn[1].axes[1].get_yscale() == "linear"
    assert (tmp_path / "a.png").read_bytes().startswith(PNG)


def test_a_conditional_grid_labels_each_row_with_its_class(tmp_path, drawn):
    """Row labels sit at the middle of each row (28-pixel cells plus their border);
    an unconditional grid has no ticks at all."""
    images = np.zeros((4, 1, 28, 28), np.float32)
    plots.save_image_grid(tmp_path / "labelled.png", images, 2, row_labels=[3, 7])
    plots.save_image_grid(tmp_path / "plain.png", images, 2)
    labelled, plain = drawn[0].axes[0], drawn[1].axes[0]
    assert [t.get_text() for t in labelled.get_yticklabels()] == ["3", "7"]
    h = plots.image_grid(images, 2).shape[0] / 2
    np.testing.assert_allclose(labelled.get_yticks(), [h / 2, 3 * h / 2])
    assert len(plain.get_yticks()) == 0 and len(labelled.get_xticks()) == 0


def test_figures_are_written_whole_and_closed_even_when_the_write_fails(tmp_path):
    before = plt.get_fignums()
    images = np.zeros((4, 1, 28, 28), np.float32)
    plots.save_image_grid(tmp_path / "grid.png", images, 2, title="t", row_labels=[3, 7])
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be\n")
    points = np.zeros((5, 2), np.float32)
    with pytest.raises(OSError, match="cannot write"):
        plots.save_scatter(blocked / "scatter.png", points, points)
    assert plt.get_fignums() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "grid.png"]


def test_curves_draw_numpy_numbers_and_skip_non_finite_ones_in_the_scale(tmp_path, drawn):
    """Metrics held as np.float32 / np.int64 were left out (an isinstance test on int and
    float); a NaN (a diverged generator's FD) leaves a gap but does not decide the scale."""
    history = [{"step": 1, "d_loss": 1.0, "g_loss": 2.0}]
    metrics = [{"step": 1, "epoch": 1, "fd": np.float32(30.0), "modes": np.int64(8),
                "flag": True},
               {"step": 2, "epoch": 2, "fd": np.float64(np.nan), "modes": np.int64(7),
                "flag": False}]
    plots.save_curves(tmp_path / "c.png", history, metrics)
    scores = drawn[0].axes[1]
    lines = {line.get_label(): list(line.get_ydata()) for line in scores.get_lines()}
    assert lines.keys() == {"fd", "modes"}  # not the bool
    assert lines["modes"] == [8, 7] and lines["fd"][0] == 30.0 and np.isnan(lines["fd"][1])
    assert scores.get_yscale() == "log"


def test_a_picture_before_any_loss_is_logged_has_no_empty_legend(tmp_path, drawn):
    """A long run draws before its first history record: Matplotlib warned "No artists
    with labels found to put in legend" onto the command's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.save_curves(tmp_path / "l.png", [], [{"step": 1, "epoch": 1}])
    assert all(ax.get_legend() is None for ax in drawn[0].axes)


def test_a_figure_is_written_in_its_own_format_whatever_the_name(tmp_path):
    """Named ".png" (no stem), the temporary file had no extension, Matplotlib saved the
    picture under that name + ".png" and the target got the empty temporary file."""
    history = [{"step": 1, "d_loss": 1.0, "g_loss": 2.0}]
    plots.save_curves(tmp_path / ".png", history)
    plots.save_curves(tmp_path / "c.pdf", history)
    assert (tmp_path / ".png").read_bytes().startswith(PNG)
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(os.listdir(tmp_path)) == [".png", "c.pdf"]
