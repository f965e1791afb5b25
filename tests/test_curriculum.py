"""The meta-level curriculum: schedule, zeroing, early snapshots and the claim-4a decision rule."""

import dataclasses

import pytest
import torch

from uni_icl.experiments import curriculum as experiment
from uni_icl.presets import PRESETS
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task
from uni_icl.tasks.schedules import DimensionCurriculum
from uni_icl.training import train

TASK = make_task("linear_regression", d=8, n_points=17)


def test_active_dimensions_grow_by_one_every_interval_then_stay_full():
    schedule = DimensionCurriculum(TASK, start_dims=2, every_steps=100)
    expected = {0: 2, 1: 2, 99: 2, 100: 3, 199: 3, 200: 4, 599: 7, 600: 8, 601: 8, 10_000: 8}
    assert {step: schedule.active_dims_at(step) for step in expected} == expected
    assert {step: schedule.task_at(step).active_dims for step in expected} == expected
    assert schedule.full_step == 600
    assert schedule.task_at(600) is TASK  # the full task itself once complete
    assert all(schedule.points_at(step) == 17 for step in expected)


def test_garg_schedule_grows_dimensions_and_points_together():
    schedule = DimensionCurriculum(TASK, 2, 20, dims_increment=1, start_points=5, points_increment=2)
    assert [schedule.task_at(step).n_points for step in (0, 19, 20, 40, 60, 120, 159, 160, 999)] == [
        5,
        5,
        7,
        9,
        11,
        17,
        17,
        17,
        17,
    ]
    assert [schedule.active_dims_at(step) for step in (0, 20, 119, 120)] == [2, 3, 7, 8]
    assert schedule.full_step == 120


def test_inactive_dimensions_are_zero_and_labels_use_only_active_ones():
    schedule = DimensionCurriculum(TASK, start_dims=3, every_steps=10)
    episode = schedule.task_at(5).sample(32, seed=0)
    assert torch.all(episode.xs[..., 3:] == 0)
    assert torch.all(episode.xs[..., :3].abs().sum((0, 1)) > 0)
    weights = episode.params["weights"]
    assert torch.allclose(episode.ys, torch.einsum("bnd,bd->bn", episode.xs[..., :3], weights[:, :3]), atol=1e-5)
    full = schedule.task_at(70).sample(32, seed=0)
    assert torch.all(full.xs.abs().sum((0, 1)) > 0)


def test_config_distinguishes_schedules():
    paper = DimensionCurriculum(TASK, 2, 100)
    assert paper.config() != DimensionCurriculum(TASK, 2, 50).config()
    assert paper.config() != DimensionCurriculum(TASK, 3, 100).config()
    assert paper.config() == DimensionCurriculum(TASK, 2, 100).config()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"start_dims": 9, "every_steps": 10}, "start_dims"),
        ({"start_dims": 0, "every_steps": 10}, "start_dims"),
        ({"start_dims": 2, "every_steps": 0}, "every_steps"),
        ({"start_dims": 2, "every_steps": 10, "start_points": 5}, "points_increment"),
        ({"start_dims": 2, "every_steps": 10, "start_points": 40, "points_increment": 2}, "start_points"),
    ],
)
def test_bad_parameters_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DimensionCurriculum(TASK, **kwargs)


def test_bad_task_is_rejected():
    with pytest.raises(ValueError, match="task"):
        DimensionCurriculum(make_task("pairwise"), 1, 10)


def test_early_snapshot_is_the_same_trajectory_as_a_shorter_run():
    smoke = PRESETS["smoke"].curriculum
    scale = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, eval_every=1000))  # late = last step
    run = experiment.train_run(scale, "paper", seed=1, progress=False)
    spec = experiment.run_spec(scale, "paper", seed=1)
    reference = build_seeded(spec.learner, spec.task, 1)
    short = dataclasses.replace(spec.train, max_steps=scale.early_step, eval_every=10_000)  # one evaluation: final
    train(reference, spec.task, short, schedule=spec.schedule, progress=False)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, run.early.state_dict()[name]), name
    assert any(not torch.equal(v, run.late.state_dict()[k]) for k, v in reference.state_dict().items())
    again = experiment.train_run(scale, "paper", seed=1, progress=False)
    assert again.loaded_from_cache and again.history == run.history


def test_steps_to_threshold_reads_the_first_crossing():
    history = {"steps": [10, 20, 30, 40], "val_score": [-8.0, -6.0, -4.0, -5.0]}  # d = 8: errors 1, .75, .5, .625
    assert experiment.steps_to_threshold(history, 8, 0.75) == 20
    assert experiment.steps_to_threshold(history, 8, 0.5) == 30
    assert experiment.steps_to_threshold(history, 8, 0.4) is None


@pytest.mark.parametrize(
    ("per_seed", "outcome"),
    [
        (
            {0: {"none": 500, "paper": 300}, 1: {"none": 600, "paper": 400}, 2: {"none": None, "paper": 700}},
            "reproduced",
        ),
        (
            {0: {"none": 500, "paper": 300}, 1: {"none": 600, "paper": 700}, 2: {"none": 800, "paper": 400}},
            "inconclusive",
        ),
        (
            {0: {"none": 300, "paper": 300}, 1: {"none": 600, "paper": 700}, 2: {"none": 800, "paper": 900}},
            "not reproduced",
        ),
        (
            {0: {"none": None, "paper": None}, 1: {"none": 600, "paper": 500}, 2: {"none": 800, "paper": 400}},
            "inconclusive",
        ),
        (
            {0: {"none": None, "paper": None}, 1: {"none": None, "paper": None}, 2: {"none": 8, "paper": 9}},
            "inconclusive",
        ),
    ],
)
def test_decision_rule(per_seed, outcome):
    assert experiment.decide_4a(per_seed) == outcome


def test_threshold_is_half_way_to_least_squares():
    scale = PRESETS["paper"].curriculum
    assert scale.least_squares_error == pytest.approx(21 / 82)
    assert scale.threshold == pytest.approx((1 + 21 / 82) / 2)


def test_summary_gives_a_ratio_or_an_upper_bound():
    scale = PRESETS["smoke"].curriculum  # max_steps 12, seeds 0-2

    def results(none, paper):
        rows = [{"arm": "none", "seed": s, "steps_to_threshold": v} for s, v in zip(scale.seeds, none, strict=True)]
        rows += [{"arm": "paper", "seed": s, "steps_to_threshold": v} for s, v in zip(scale.seeds, paper, strict=True)]
        return {"scale": scale, "rows": rows}

    finite = experiment.summary(results([8, 12, 4], [4, 8, 4]), "paper")
    assert finite["median_none"] == 8 and finite["median_paper"] == 4 and finite["ratio"] == pytest.approx(0.5)
    bounded = experiment.summary(results([None, None, 4], [4, 8, 4]), "paper")
    assert bounded["median_none"] == float("inf") and bounded["ratio_upper_bound"] == pytest.approx(4 / 12)
    assert bounded["ratio_text"] == "below 0.33"
