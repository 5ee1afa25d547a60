"""Figure functions on hand-made cell tables: what a reader must be able to see."""

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from study.report import charts as P
from study.report import figures as F  # noqa: E402
from study.report import style  # noqa: E402


def _cells():
    rows = []
    for m, ratios in (
        ("none", {16: (2.9e-10, 2.2e-10), 32: (0.0, 0.0)}),
        ("batch_norm", {16: (3.5, 9.0), 32: (4.6, 8.0)}),
    ):
        for d, (init, final) in ratios.items():
            rows.append(
                {
                    "activation": "sigmoid",
                    "optimizer": "sgd",
                    "mitigation": m,
                    "depth": d,
                    "diag/ratio_first_last_init": init,
                    "diag/ratio_first_last_final": final,
                }
            )
    return pd.DataFrame(rows)


def test_a_ratio_of_exactly_zero_is_drawn_below_every_real_ratio_and_named_in_the_legend():
    cells = _cells()
    lo, hi = style.ratio_limits(cells, 1e-2, 1e2)
    assert lo < 2.2e-10 / 100 and hi >= 1e3
    plain = cells[cells["mitigation"] == "none"]  # ratio_vs_depth draws the median over other axes
    for fig in (P.ratio_by(cells, "mitigation", 1e-2, 1e2), F.ratio_vs_depth(plain, 1e-2, 1e2)):
        ax = fig.axes[0]
        assert ax.get_ylim()[0] == lo
        marks = [l for l in ax.get_lines() if l.get_marker() == "v" and len(l.get_xdata())]
        assert len(marks) == 2  # last epoch and initialisation of the none/32 cell
        assert all(list(l.get_xdata()) == [32] and lo < l.get_ydata()[0] < 2.2e-10 for l in marks)
        texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert "ratio exactly 0 (underflow)" in texts


def test_a_cell_whose_ratio_at_init_is_undefined_still_shows_its_last_epoch():
    cells = pd.DataFrame(
        [
            {
                "activation": "relu",
                "optimizer": "sgd",
                "init": i,
                "depth": d,
                "diag/ratio_first_last_init": r0,
                "diag/ratio_first_last_final": r1,
            }
            for i, d, r0, r1 in (("small_normal", 4, 13.2, 3.8), ("small_normal", 16, np.nan, 0.0))
        ]
    )
    ax = P.ratio_by(cells, "init", 1e-2, 1e2).axes[0]
    solid = [l for l in ax.get_lines() if l.get_marker() == "o"][0]
    assert list(solid.get_xdata()) == [4, 16] and np.isfinite(solid.get_ydata()).all()
    assert [list(l.get_xdata()) for l in ax.get_lines() if l.get_marker() == "v" and len(l.get_xdata())] == [[16]]


def test_no_zero_no_floor_marker():
    cells = _cells()
    cells = cells[cells["mitigation"] == "batch_norm"]
    fig = P.ratio_by(cells, "mitigation", 1e-2, 1e2)
    assert not [l for l in fig.axes[0].get_lines() if l.get_marker() == "v" and len(l.get_xdata())]
    assert "ratio exactly 0 (underflow)" not in [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert np.isclose(style.ratio_limits(cells, 1e-2, 1e2)[0], 1e-3)


def _epochs(seeds: int) -> pd.DataFrame:
    rows = []
    for init, base in (("he_normal", 1.0), ("lecun_normal", 2.3)):
        for seed in range(seeds):
            for epoch in range(4):
                rows.append(
                    dict(
                        run_id=f"{init}-{seed}",
                        init=init,
                        depth=22,
                        epoch=epoch,
                        metric="train/loss",
                        value=base - 0.1 * epoch * (seed + 1),
                    )
                )
    return pd.DataFrame(rows)


def test_epoch_curves_with_seeds_draw_the_mean_its_t_interval_and_each_seed():
    from study.report import stats

    fig = P.curves_vs(_epochs(3), "init", "depth", [("train/loss", "training loss")])
    ax = fig.axes[0]
    mean_line = next(l for l in ax.get_lines() if l.get_label() == "he_normal")
    # the mean over seeds 0.1*epoch*(1+2+3)/3 = 0.2*epoch below the base
    np.testing.assert_allclose(mean_line.get_ydata(), [1.0, 0.8, 0.6, 0.4])
    # 3 thin seed lines per init beside the 2 mean lines
    assert len(ax.get_lines()) == 2 + 2 * 3
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    # widest at the last epoch, where the seeds are furthest apart
    _, _, lo, hi = stats.t_interval([1.0 - 0.1 * 3 * k for k in (1, 2, 3)])
    assert lo < 0 and band.min() == 0 and np.isclose(band.max(), hi)  # clipped at zero loss (stats rule 2)
    assert "95 % t interval" in fig.legends[0].get_title().get_text()


def test_epoch_curves_draw_seeds_that_trained_apart_from_those_that_did_not():
    e = _epochs(3)
    trained = pd.Series({"he_normal-0": False, "he_normal-1": True, "he_normal-2": True})
    fig = P.curves_vs(e, "init", "depth", [("train/loss", "training loss")], trained=trained)
    lines = {l.get_label(): l for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")}
    assert set(lines) == {"he_normal", "he_normal, not trained", "lecun_normal"}
    # the trained seeds' mean (seeds 1 and 2: 0.1*epoch*(2+3)/2 below 1) and the other seed alone, dashed
    np.testing.assert_allclose(lines["he_normal"].get_ydata(), [1.0, 0.75, 0.5, 0.25])
    np.testing.assert_allclose(lines["he_normal, not trained"].get_ydata(), [1.0, 0.9, 0.8, 0.7])
    assert lines["he_normal, not trained"].get_linestyle() == "--"
    assert "did not train" in fig.legends[0].get_title().get_text()


def test_epoch_curves_of_one_seed_have_no_band():
    fig = P.curves_vs(_epochs(1), "init", "depth", [("train/loss", "training loss")])
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2 and not ax.collections
    assert "interval" not in fig.legends[0].get_title().get_text()


def test_heatmap_of_several_seeds_carries_the_t_half_width():
    from study.report import stats

    cells = pd.DataFrame(
        dict(activation="tanh", init=["a", "a", "a", "b"], depth=5, **{"test/accuracy": [0.80, 0.84, 0.88, 0.5]})
    )
    fig = P.axis_heatmap(cells, "init")
    texts = [t.get_text() for t in fig.axes[0].texts]
    _, _, lo, hi = stats.t_interval([0.80, 0.84, 0.88])
    assert f"0.84\n±{(hi - lo) / 2:.2f}" in texts
    assert "0.50" in texts  # one seed: no interval
    assert "95 % t interval" in fig.get_supxlabel()


def test_heatmap_of_seeds_that_split_prints_k_of_n_and_never_a_mean_with_an_interval():
    cells = pd.DataFrame(
        dict(
            activation="relu",
            init="he",
            depth=8,
            outcome="finished",
            trained=[True, False, False],
            **{"test/accuracy": [0.434, 0.105, 0.101]},
        )
    )
    texts = [t.get_text() for t in P.axis_heatmap(cells, "init").axes[0].texts]
    assert texts == ["1/3\n(0.43)"]
    agree = cells.assign(trained=True, **{"test/accuracy": [0.99, 0.90, 0.999]})  # interval meets 1: clipped
    (text,) = [t.get_text() for t in P.axis_heatmap(agree, "init").axes[0].texts]
    assert text.startswith("0.96\n[") and text.endswith(", 1.00]")
