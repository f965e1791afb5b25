"""The budget ladder: models stored at shorter budgets on the way are the models of those budgets."""

import dataclasses

import numpy as np
import pytest
import torch

from uni_icl.convergence import calibration, remaining_gain
from uni_icl.learners import LearnerSpec
from uni_icl.parallel import Job, one_job_per_entry
from uni_icl.presets import MARGIN
from uni_icl.runs import RunSpec, check_rungs, model_path, rung_spec, train_or_load
from uni_icl.storage import checked_torch_load
from uni_icl.tasks import make_task
from uni_icl.training import TrainConfig

TASK = make_task("pairwise", n_points=12)
CONFIG = TrainConfig(max_steps=40, batch_size=8, eval_every=5, n_val_tasks=16, checkpoint_every=15, lr=3e-3)
SPEC = RunSpec(LearnerSpec("protonet", {"hidden": 8, "n_layers": 2}), TASK, CONFIG)


def _entry(spec, root):
    return checked_torch_load(model_path(spec, root))


def test_a_rung_holds_what_a_run_of_that_budget_trains(tmp_path):
    train_or_load(SPEC, root=tmp_path / "ladder", progress=False, rungs=(10, 20, 40))
    for rung in (10, 20):
        short = rung_spec(SPEC, rung)
        direct = train_or_load(short, root=tmp_path / "direct", progress=False)
        stored = _entry(short, tmp_path / "ladder")
        assert stored is not None, f"rung {rung} was not stored"
        for name, tensor in direct.learner.state_dict().items():
            assert torch.equal(stored["weights"][name], tensor), (rung, name)
        history = {k: v for k, v in stored["history"].items() if k != "seconds"}
        assert history == {k: v for k, v in direct.history.to_dict().items() if k != "seconds"}
        assert stored["config"] == short.config()


class HardKillError(Exception):
    """Stands for a hard kill: nothing is saved when it is raised."""


def test_rungs_survive_an_interrupted_ladder(tmp_path, monkeypatch):
    """A ladder killed at step 18 (after its step-15 checkpoint) and run again stores the rungs of a run
    straight through."""
    import uni_icl.runs

    real_train = uni_icl.runs.train

    def kill_at_18(step, learner):
        if step == 18:
            raise HardKillError

    monkeypatch.setattr(uni_icl.runs, "train", lambda *a, **k: real_train(*a, callbacks=[kill_at_18], **k))
    with pytest.raises(HardKillError):
        train_or_load(SPEC, root=tmp_path / "resumed", progress=False, rungs=(10, 20))
    assert _entry(rung_spec(SPEC, 10), tmp_path / "resumed") is not None
    assert _entry(rung_spec(SPEC, 20), tmp_path / "resumed") is None
    monkeypatch.setattr(uni_icl.runs, "train", real_train)
    train_or_load(SPEC, root=tmp_path / "resumed", progress=False, rungs=(10, 20))
    train_or_load(SPEC, root=tmp_path / "straight", progress=False, rungs=(10, 20))
    for rung in (10, 20, 40):
        spec = rung_spec(SPEC, rung)
        resumed, straight = _entry(spec, tmp_path / "resumed"), _entry(spec, tmp_path / "straight")
        assert all(torch.equal(resumed["weights"][n], t) for n, t in straight["weights"].items()), rung


@pytest.mark.parametrize(
    "change",
    [{"lr_schedule": "warmup_cosine"}, {"patience": 2}, {"stop_tolerance": 0.01}, {"time_limit_s": 5.0}],
)
def test_a_ladder_refuses_runs_whose_budget_changes_their_path(change):
    spec = dataclasses.replace(SPEC, train=dataclasses.replace(CONFIG, **change))
    with pytest.raises(ValueError, match="rungs: a budget ladder needs"):
        check_rungs(spec, (10, 20))


@pytest.mark.parametrize("rung", [7, 0, 45])
def test_a_rung_must_be_an_evaluation_step_within_the_budget(rung):
    with pytest.raises(ValueError, match="rungs: each must be a multiple of eval_every"):
        check_rungs(SPEC, (rung,))


def test_the_job_that_stores_the_ladder_wins_over_a_plain_one(tmp_path):
    path = tmp_path / "model.pt"
    plain = Job("plain", path, print)
    ladder = Job("ladder", path, print, rungs=(10, 20))
    assert [job.label for job in one_job_per_entry([ladder, plain])] == ["ladder"]
    assert [job.label for job in one_job_per_entry([plain, ladder])] == ["ladder"]


def _power_law(steps, ceiling, scale, alpha):
    return [ceiling - scale * step**-alpha for step in steps]


STEPS = list(range(100, 8001, 100))


@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.5, 1.0])
def test_a_curve_still_gaining_0012_after_the_budget_fails(alpha):
    """A power law that gains 0.012 between the budget T = 1000 and 8T is not converged at T."""
    budget = 1000
    scale = 0.012 / (budget**-alpha - (8 * budget) ** -alpha)
    curve = _power_law(STEPS, 0.95, scale, alpha)
    upto = STEPS.index(budget) + 1
    assert curve[-1] - curve[upto - 1] == pytest.approx(0.012)
    test = remaining_gain(STEPS[:upto], curve[:upto], MARGIN)
    assert not test.converged and test.bound >= MARGIN


def test_a_flat_curve_passes_and_a_noisy_flat_one_too():
    assert remaining_gain(STEPS, [0.9] * len(STEPS), MARGIN).converged
    noise = np.random.default_rng(0).normal(0, 0.002, len(STEPS))
    assert remaining_gain(STEPS, list(0.9 + noise), MARGIN).converged


def test_too_short_a_curve_is_not_converged():
    assert not remaining_gain([100, 200, 300], [0.9, 0.9, 0.9], MARGIN).converged


def test_calibration_counts_later_gains_of_the_points_called_converged():
    flat = (STEPS, [0.9] * len(STEPS))
    # flat until 4000, then a jump of 0.05: points called converged before it gained 0.05 later
    jump = (STEPS, [0.9 if step <= 4000 else 0.95 for step in STEPS])
    record = calibration([flat, jump], MARGIN)
    assert record["runs"] == 2 and record["points_converged"] > 0
    assert record["later_gain"]["max"] == pytest.approx(0.05)
    assert 0 < record["share_below_margin"] < 1
    assert calibration([flat], MARGIN)["share_below_margin"] == 1.0


def _ladder(claim: str, steps: tuple[int, ...]) -> list[dict]:
    rows = []
    for index, step in enumerate(steps):
        effect = {"claim": claim, "steps": step, "label": "d", "effect": 0.02 * index, "ci": 0.01}
        rows.append({"kind": "comparison", **effect})
        rows.append({"kind": "decisive", **effect, "outcome": "inconclusive", "ungated_outcome": "not reproduced"})
    return rows


def test_the_ladder_reading_counts_each_claims_budget_in_its_own_unit():
    from uni_icl.book.ladder import ladder_reading

    meta = ladder_reading(_ladder("4b", (50, 100, 200, 400)), "4b", 0.0953)
    assert "at 50 meta-steps" in meta and "400 meta-steps: **inconclusive** (the rule alone: not reproduced)" in meta
    steps = ladder_reading(_ladder("3a", (1000, 8000)), "3a", 0.01)
    assert "at 1,000 steps" in steps and "meta-steps" not in steps


def test_the_ladder_figure_labels_only_the_budgets_and_rounds_the_margin():
    import matplotlib.pyplot as plt

    from uni_icl.book.ladder import ladder_figure

    fig = ladder_figure(_ladder("4b", (50, 100, 200, 400)), "4b", 0.09531017980432493)
    fig.canvas.draw()
    ax = fig.axes[0]
    top = next(child for child in ax.get_children() if child.__class__.__name__ == "SecondaryAxis")
    labels = [t.get_text() for t in top.xaxis.get_ticklabels(which="both") if t.get_text()]
    assert labels == ["inconclusive"] * 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "margin band (±0.0953)" in legend
    plt.close(fig)
