"""The parallel trainer: same stored models with 1 and 2 workers, stored jobs skipped, stages in
order, a failing job stops the grid, and bad worker/thread settings rejected in one line."""

from __future__ import annotations

import functools
import operator
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from uni_icl.experiments import learnability
from uni_icl.parallel import Job, train_all
from uni_icl.presets import get_preset
from uni_icl.runs import check_rungs, model_path, rung_spec
from uni_icl.runtime import current_runtime, runtime_from_env, use_runtime
from uni_icl.storage import checked_torch_load


def _stored_models(jobs: list[Job]) -> dict[str, dict]:
    return {job.label: checked_torch_load(job.path) for job in jobs}


def test_two_workers_store_the_same_models_as_one(tmp_path):
    """The workers store into the cache of the runtime they are handed (not the environment's)."""
    stores = {}
    for workers in (1, 2):
        with use_runtime(replace(current_runtime(), cache=tmp_path / f"workers-{workers}")):
            jobs = learnability.training_plan(get_preset("smoke"))[:4]
            ran = train_all(jobs, workers=workers, progress=False)
        assert sorted(ran) == sorted(job.label for job in jobs)
        stores[workers] = _stored_models(jobs)
    assert stores[1].keys() == stores[2].keys()
    for label, one in stores[1].items():
        two = stores[2][label]
        for name, tensor in one["weights"].items():
            assert torch.equal(tensor, two["weights"][name]), f"{label}: {name} differs between 1 and 2 workers"
        for field in ("steps", "train_loss", "val_score", "val_loss", "best_step"):
            assert one["history"][field] == two["history"][field], f"{label}: history.{field} differs"


def test_stored_jobs_are_skipped_and_stages_run_in_order(tmp_path):
    log = tmp_path / "order.txt"
    jobs = [
        Job("late", tmp_path / "late", functools.partial(_append, log, "late"), stage=1),
        Job("early", tmp_path / "early", functools.partial(_append, log, "early"), stage=0),
        Job("stored", tmp_path / "stored", functools.partial(_append, log, "stored")),
    ]
    (tmp_path / "stored").write_text("done")
    assert train_all(jobs, workers=1, progress=False) == ["early", "late"]
    assert log.read_text().split() == ["early", "late"]


def _append(log, label) -> None:
    with log.open("a") as file:
        file.write(label + "\n")


def test_an_error_in_a_worker_is_raised_here(tmp_path):
    jobs = [Job(f"divide {i}", tmp_path / f"never-{i}", functools.partial(operator.truediv, 1, 0)) for i in range(2)]
    with pytest.raises(ZeroDivisionError):
        train_all(jobs, workers=2, progress=False)


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_bad_worker_and_thread_counts_are_one_line_errors(value):
    with pytest.raises(ValueError, match="UNI_ICL_WORKERS: .*allowed: a positive integer"):
        runtime_from_env({"UNI_ICL_WORKERS": value})
    with pytest.raises(ValueError, match="UNI_ICL_THREADS: .*allowed: a positive integer"):
        runtime_from_env({"UNI_ICL_THREADS": value})
    assert runtime_from_env({"UNI_ICL_WORKERS": "3"}).workers == 3
    assert runtime_from_env({}).threads == 1


def test_the_cli_rejects_a_bad_worker_count_before_any_work(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "UNI_ICL_WORKERS": "many", "UNI_ICL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "uni_icl", "reproduce", "--preset", "smoke"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: UNI_ICL_WORKERS: got 'many'; allowed: a positive integer (default: one per core)"
    ]
    assert not (tmp_path / "cache").exists()


def test_seeds_trained_as_one_ensemble_store_what_single_runs_store(tmp_path):
    """On CUDA the seeds of a model train as one ensemble; forced here on the CPU, the stored entries
    (the budget ladder's shorter rungs too) match single-model training up to the ensemble's float
    rounding (see tests/test_ensemble.py)."""
    stores = {}
    for ensembles in (False, True):
        with use_runtime(replace(current_runtime(), cache=tmp_path / f"ensembles-{ensembles}")):
            plan = learnability.training_plan(get_preset("smoke"))
            jobs = [job for job in plan if job.spec.learner.name == "protonet" and job.spec.task.name == "pairwise"]
            jobs = [job for job in jobs if job.spec.learner.params["hidden"] != 2]
            assert len(jobs) == 2  # the smoke preset's two seeds (not the authors' 2-2-2 shape)
            ran = train_all(jobs, workers=1, ensembles=ensembles, progress=False)
            assert len(ran) == (1 if ensembles else 2)
            rungs = [rung_spec(job.spec, rung) for job in jobs for rung in check_rungs(job.spec, job.rungs)]
            assert len(rungs) == 2  # each seed's shorter rung
            stores[ensembles] = _stored_models(jobs) | {
                spec.key: checked_torch_load(model_path(spec)) for spec in rungs
            }
    assert stores[True].keys() == stores[False].keys()
    for label, single in stores[False].items():
        batched = stores[True][label]
        assert batched["config"] == single["config"]
        assert batched["history"]["steps"] == single["history"]["steps"]
        for name, tensor in single["weights"].items():
            assert torch.allclose(tensor, batched["weights"][name], atol=1e-4), f"{label}: {name}"
