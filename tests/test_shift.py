"""Distribution shift: the noise-range family, the shift grid and gaps, the claim 3(b) rule, the explorer."""

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from uni_icl.evaluation import EVAL_BATCH, evaluate
from uni_icl.experiments import shift
from uni_icl.learners import LearnerSpec
from uni_icl.learners.selectors import AlgorithmSelector
from uni_icl.presets import PRESETS
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task

FAMILIES = ("pairwise", "prototype", "amortized")


def test_noise_range_family_draws_noise_per_group_within_the_range():
    task = make_task("noise_range", inner="pairwise", n_points=400, noise_low=1.0, noise_high=5.0, n_groups=64)
    episode = task.sample(64, seed=0)
    sigmas = episode.params["noise_std"]
    assert episode.xs.shape == (64, 400, 2) and sigmas.shape == (64,)
    assert sigmas.min() >= 1.0 and sigmas.max() <= 5.0 and sigmas.unique().numel() == 64
    measured = episode.xs.std(dim=(1, 2))  # pairwise: x ~ N(0, sigma^2 I)
    torch.testing.assert_close(measured, sigmas, rtol=0.12, atol=0.0)
    again = task.sample(64, seed=0)
    torch.testing.assert_close(again.xs, episode.xs)
    assert (again.ys == episode.ys).all()


def test_noise_range_family_groups_share_a_level_and_keep_inner_labels():
    task = make_task("noise_range", inner="mixture", n_points=20, n_groups=4)
    episode = task.sample(10, seed=1)
    sigmas = episode.params["noise_std"]
    assert sigmas.unique().numel() == 4 and sigmas[:3].unique().numel() == 1
    assert {"component", "noise_std"} <= set(episode.params)
    amortized = make_task("noise_range", inner="amortized", n_points=20).sample(8, seed=2)
    rule = (amortized.xs.sum(-1) <= amortized.params["task_vector"].sum(-1, keepdim=True)).long()
    assert (amortized.ys == rule).all()


@pytest.mark.parametrize(
    ("params", "name"),
    [({"inner": "linear_regression"}, "inner"), ({"noise_low": 0.0}, "noise_low"), ({"noise_high": 0.5}, "noise_high")],
)
def test_noise_range_family_rejects_bad_parameters(params, name):
    with pytest.raises(ValueError, match=name):
        make_task("noise_range", **params)


def tiny(name: str, seed: int = 0):
    return build_seeded(LearnerSpec(name, {"hidden": 8, "n_layers": 2}), make_task("mixture", n_points=20), seed)


def tiny_results(noise_levels=(1.0, 3.0), n_tasks=16) -> shift.ShiftResults:
    """ShiftResults at the smoke preset built from untrained tiny learners (no training, no cache)."""
    meta = {"pairwise": tiny("matchnet"), "prototype": tiny("protonet"), "amortized": tiny("cnp")}
    icl = build_seeded(LearnerSpec("icl", {"width": 8, "depth": 1, "n_heads": 2}), make_task("mixture"), 0)
    selector = AlgorithmSelector(
        {"matchnet": meta["pairwise"], "protonet": meta["prototype"], "cnp": meta["amortized"]}
    )
    models = {
        shift.ICL_MIXTURE: dict.fromkeys(FAMILIES, icl),
        shift.META: meta,
        shift.SELECTOR: dict.fromkeys(FAMILIES, selector),
    }

    def evaluator(name):
        return lambda family, task: evaluate(models[name][family], task, n_tasks=n_tasks, seed=5)

    evaluators = {name: evaluator(name) for name in models}
    rows = shift.shift_grid(
        evaluators, FAMILIES, noise_levels, lambda f, s: make_task(f, n_points=20, noise_std=s), progress=False
    )
    smoke = PRESETS["smoke"]
    return shift.ShiftResults(
        "smoke", smoke.classification, smoke.shift, tuple(noise_levels), rows, [], models, {}, {}, 0.0
    )


def test_shift_grid_has_one_row_per_family_noise_level_and_learner():
    results = tiny_results(noise_levels=(1.0, 2.0, 4.0))
    assert len(results.rows) == 3 * 3 * 3
    keys = {(r["family"], r["noise_std"], r["learner"]) for r in results.rows}
    assert len(keys) == 27
    row = results.rows[0]
    assert len(row["per_position"]) == 20 and len(row["per_episode_mean"]) == 16
    frame = shift.curves_frame(results.rows)
    assert list(frame.columns) == ["family", "noise_std", "learner", "shots", "accuracy", "ci"]
    assert len(frame) == 27 * 20
    # the grid evaluates at the requested noise: a learner's result equals a direct evaluation there
    direct = evaluate(
        results.models[shift.META]["prototype"], make_task("prototype", n_points=20, noise_std=4.0), 16, 5
    )
    cell = next(
        r for r in results.rows if (r["family"], r["noise_std"], r["learner"]) == ("prototype", 4.0, shift.META)
    )
    assert cell["mean"] == pytest.approx(direct.mean)


def test_gaps_are_paired_on_the_reference_prefix():
    def row(learner, values, sigma=1.0):
        return {"family": "pairwise", "noise_std": sigma, "learner": learner, "per_episode_mean": values}

    rows = [row(shift.BAYES, [1.0, 0.8]), row(shift.META, [0.5, 0.6, 0.0, 0.0])]
    (gap,) = shift.gap_rows(rows)
    assert gap["gap"] == pytest.approx(0.35) and gap["n_tasks"] == 2
    with pytest.raises(ValueError, match="reference"):
        shift.gap_rows([row(shift.META, [0.5, 0.6], sigma=2.0)])


def test_a_prefix_of_the_test_episodes_is_a_smaller_evaluation():
    """The Monte-Carlo reference uses the first EVAL_BATCH episodes of every learner's test set."""
    learner = tiny("protonet")
    task = make_task("prototype", n_points=6)
    full = evaluate(learner, task, n_tasks=2 * EVAL_BATCH, seed=9)
    prefix = evaluate(learner, task, n_tasks=EVAL_BATCH, seed=9)
    assert full.per_episode_mean[:EVAL_BATCH] == prefix.per_episode_mean


def gap_results(icl_growth: float, meta_growth: float, ci: float = 0.01) -> shift.ShiftResults:
    gaps = []
    for family in FAMILIES:
        for learner in (shift.ICL_OWN, shift.META, shift.ICL_MIXTURE, shift.SELECTOR, shift.REMEDY):
            grow = icl_growth if learner != shift.META else meta_growth
            gaps.append({"family": family, "noise_std": 1.0, "learner": learner, "gap": 0.02, "ci": ci})
            gaps.append({"family": family, "noise_std": 5.0, "learner": learner, "gap": 0.02 + grow, "ci": ci})
    names = {"pairwise": "MatchNet", "prototype": "ProtoNet", "amortized": "CNP"}
    smoke = PRESETS["smoke"]
    return shift.ShiftResults("smoke", smoke.classification, smoke.shift, (1.0, 5.0), [], gaps, {}, {}, names, 0.0)


def test_claim_3b_rule():
    assert shift.verdicts(gap_results(icl_growth=0.1, meta_growth=0.0))[0].outcome == "reproduced"
    assert shift.verdicts(gap_results(icl_growth=0.0, meta_growth=0.0))[0].outcome == "not reproduced"
    assert shift.verdicts(gap_results(icl_growth=0.1, meta_growth=0.1))[0].outcome == "not reproduced"
    verdict = shift.verdicts(gap_results(icl_growth=0.1, meta_growth=-0.05))[0]
    assert verdict.outcome == "reproduced" and verdict.numbers["families_supporting"] == 3


def panel_pixels(explorer) -> np.ndarray:
    canvas = FigureCanvasAgg(explorer.figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def test_explorer_callbacks_redraw_the_curves_and_the_decision_regions():
    explorer = shift.ShiftExplorer(tiny_results(), resolution=8)
    assert set(explorer.selection) == {"family", "noise_std", "learner", "shots"}
    curves, regions = explorer.axes
    before_lines = [line.get_ydata().copy() for line in curves.get_lines() if line.get_label() in explorer.grid.palette]
    before_pixels, before_redraws = panel_pixels(explorer), explorer.grid.redraws

    explorer.set(noise_std=3.0)
    after_lines = [line.get_ydata() for line in curves.get_lines() if line.get_label() in explorer.grid.palette]
    assert explorer.grid.redraws == before_redraws + 1
    assert any(not np.array_equal(a, b) for a, b in zip(before_lines, after_lines, strict=True))
    assert "noise_std = 3.0" in curves.get_title()

    pixels = panel_pixels(explorer)
    explorer.set(learner=shift.META, shots=4)
    assert explorer.selection["learner"] == shift.META and "4 shots" in regions.get_title()
    assert not np.array_equal(panel_pixels(explorer), pixels)
    assert not np.array_equal(pixels, before_pixels)
    dashed = [line for line in curves.get_lines() if line.get_linestyle() == "--"]
    assert dashed and dashed[-1].get_xdata()[0] == 4

    explorer.set(family="amortized")
    assert "family = amortized" in curves.get_title()
    with pytest.raises(ValueError, match="control"):
        explorer.set(colour="red")
