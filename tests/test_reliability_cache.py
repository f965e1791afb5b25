"""Cache entries cannot run code or poison later runs (issue 13, parts 2 and 3).

A crafted pickle with a valid checksum line is refused unread; a curriculum run whose early
snapshot was lost trains again instead of storing no early weights; structural damage to the cache
folder is one line naming the path; loaded JSON with a wrong key or an impossible value is
recomputed; two partial scorecard runs at once keep both claims.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from uni_icl import scorecard
from uni_icl.experiments import curriculum as experiment
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.presets import PRESETS
from uni_icl.runs import evaluate_or_load, model_path, train_or_load
from uni_icl.storage import atomic_json_save, checked_json_load
from uni_icl.tasks.schedules import DimensionCurriculum
from uni_icl.training import train
from uni_icl.verdicts import ClaimVerdict

SMOKE = PRESETS["smoke"].classification
SPEC = classification_run(SMOKE, "protonet", classification_task(SMOKE, "prototype"))
CLI_TRAIN = ["train", "protonet", "prototype", "--preset", "smoke", "--no-progress"]


class RunsCode:
    """Unpickling this calls os.system: what a hostile cache file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant_torch(path, obj):
    """Write ``obj`` where the store reads, with a valid checksum line (anyone can compute one)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def edit_json_entry(path, edit):
    """Hand-edit a stored JSON entry and recompute its checksum line, so only validation can notice."""
    data = json.loads(path.read_bytes().partition(b"\n")[2])
    edit(data)
    payload = json.dumps(data).encode()
    path.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def run_cli(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "uni_icl", *args], capture_output=True, text=True, env=env, timeout=300
    )


# ---------------------------------------------------------------------------------------------
# Part 2: a crafted pickle is refused, never executed
# ---------------------------------------------------------------------------------------------


def test_crafted_model_entry_is_refused_not_executed(tmp_path):
    marker = tmp_path / "code-ran"
    plant_torch(model_path(SPEC), {"weights": RunsCode(marker), "history": {}, "config": {}})
    with pytest.warns(UserWarning, match="refused"):
        model = train_or_load(SPEC, progress=False)
    assert not marker.exists()
    assert not model.loaded_from_cache  # treated as missing: trained again
    assert train_or_load(SPEC, progress=False).loaded_from_cache


def test_crafted_checkpoint_is_refused_and_training_starts_over(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "run.ckpt"
    plant_torch(checkpoint, {"weights": {}, "state": RunsCode(marker)})
    learner = SPEC.learner.build(2, 2)
    with pytest.warns(UserWarning, match="refused"):
        history = train(learner, SPEC.task, SPEC.train, checkpoint_path=checkpoint, progress=False)
    assert not marker.exists()
    assert history.steps[-1] == SPEC.train.max_steps


def test_crafted_entry_gives_one_warning_line_on_the_command_line(tmp_path):
    marker = tmp_path / "code-ran"
    plant_torch(model_path(SPEC), {"weights": RunsCode(marker), "history": {}, "config": {}})
    result = run_cli(*CLI_TRAIN)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("warning: refused") and str(model_path(SPEC)) in line


# ---------------------------------------------------------------------------------------------
# Part 3: the curriculum's early snapshot
# ---------------------------------------------------------------------------------------------


class HardKillError(Exception):
    """Stands for kill -9 during training."""


def curriculum_run_killed_after_the_snapshot(monkeypatch):
    """Train the smoke 'paper' arm, seed 0, until a hard kill at step 8 (checkpoint at 6, snapshot at 4)."""
    scale = PRESETS["smoke"].curriculum
    original = DimensionCurriculum.task_at

    def task_at(self, step):
        if step == 8:
            raise HardKillError
        return original(self, step)

    with monkeypatch.context() as patch:
        patch.setattr(DimensionCurriculum, "task_at", task_at)
        with pytest.raises(HardKillError):
            experiment.train_run(scale, "paper", 0, progress=False)
    [side_file] = (experiment.cache_root() / "models").glob("*.early")
    assert list(side_file.parent.glob("*.ckpt"))
    return scale, side_file


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_lost_early_snapshot_trains_again_instead_of_storing_no_weights(tmp_path, monkeypatch, set_runtime, damage):
    scale, side_file = curriculum_run_killed_after_the_snapshot(monkeypatch)
    if damage == "deleted":
        side_file.unlink()
    else:
        side_file.write_bytes(side_file.read_bytes()[:100])
    with pytest.warns(UserWarning):
        run = experiment.train_run(scale, "paper", 0, progress=False)
    again = experiment.train_run(scale, "paper", 0, progress=False)  # the stored entry is whole
    assert again.loaded_from_cache
    set_runtime(cache=tmp_path / "uninterrupted")
    reference = experiment.train_run(scale, "paper", 0, progress=False)
    for model in (run, again):
        for name, value in reference.early.state_dict().items():
            assert torch.equal(value, model.early.state_dict()[name]), name
        for name, value in reference.late.state_dict().items():
            assert torch.equal(value, model.late.state_dict()[name]), name


def test_stored_curriculum_entry_without_early_weights_is_recomputed():
    scale = PRESETS["smoke"].curriculum
    experiment.train_run(scale, "none", 0, progress=False)
    [path] = (experiment.cache_root() / "models").glob("curriculum-none-*.pt")
    stored = torch.load(io.BytesIO(path.read_bytes().partition(b"\n")[2]), weights_only=True)
    plant_torch(path, {**stored, "early_weights": None})  # what the old code stored after losing the side file
    with pytest.warns(UserWarning, match="invalid"):
        run = experiment.train_run(scale, "none", 0, progress=False)
    assert not run.loaded_from_cache and run.early.state_dict()


# ---------------------------------------------------------------------------------------------
# Part 3: structural damage is one line naming the path, exit status 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["entry is a folder", "lock is a folder", "models is a file"])
def test_structural_damage_is_one_line_naming_the_path(isolated_cache, damage):
    entry = model_path(SPEC)
    if damage == "entry is a folder":
        culprit = entry
        culprit.mkdir(parents=True)
    elif damage == "lock is a folder":
        culprit = entry.with_name(entry.name + ".lock")
        culprit.mkdir(parents=True)
    else:
        culprit = isolated_cache / "models"
        isolated_cache.mkdir()
        culprit.write_text("not a folder")
    result = run_cli(*CLI_TRAIN)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: storage: ") and str(culprit) in line
    assert ("is a folder" if "folder" in damage else "is a file") in line


# ---------------------------------------------------------------------------------------------
# Part 3: loaded JSON is validated; a bad entry is treated as missing
# ---------------------------------------------------------------------------------------------


def impossible_accuracy(data):
    data["mean"] = 9.53


def renamed_key(data):
    data["accurracy"] = data.pop("mean")


def not_finite(data):
    data["per_position"][0] = float("nan")


@pytest.mark.parametrize("edit", [impossible_accuracy, renamed_key, not_finite])
def test_hand_edited_result_with_a_valid_checksum_is_recomputed(isolated_cache, edit):
    model = train_or_load(SPEC, progress=False)
    first = evaluate_or_load(model, SPEC.task, n_tasks=32, seed=5)
    [path] = (isolated_cache / "results").glob("*.json")
    edit_json_entry(path, edit)
    with pytest.warns(UserWarning, match="invalid"):
        assert evaluate_or_load(model, SPEC.task, n_tasks=32, seed=5) == first
    assert evaluate_or_load(model, SPEC.task, n_tasks=32, seed=5) == first


def make_verdict(claim, preset="smoke"):
    return ClaimVerdict(
        claim=claim, preset=preset, quantity="q", numbers={"x": 1.0}, rule="r", outcome="reproduced", chapter="c"
    )


def fake_experiments(monkeypatch, claims):
    def chapter_of(claim):
        return SimpleNamespace(
            CLAIMS=(claim,),
            run=lambda preset, progress: preset.name,
            verdicts=lambda preset_name: [make_verdict(claim, preset_name)],
            training_plan=lambda preset: [],
        )

    monkeypatch.setattr(scorecard, "EXPERIMENTS", {claim: chapter_of(claim) for claim in claims})


def test_hand_edited_scorecard_is_replaced_by_a_partial_run(monkeypatch):
    fake_experiments(monkeypatch, ["1", "3a"])
    scorecard.reproduce(PRESETS["smoke"], ["1"], progress=False)
    edit_json_entry(scorecard.scorecard_path("smoke"), lambda data: data["verdicts"][0].pop("rule"))
    with pytest.warns(UserWarning, match="invalid"):
        card = scorecard.reproduce(PRESETS["smoke"], ["3a"], progress=False)
    assert [v.claim for v in card.verdicts] == ["3a"]


# ---------------------------------------------------------------------------------------------
# Part 3: two partial scorecard runs at once keep both claims
# ---------------------------------------------------------------------------------------------


def test_concurrent_partial_runs_keep_both_claims(monkeypatch):
    fake_experiments(monkeypatch, ["1", "3a", "4a"])
    scorecard.reproduce(PRESETS["smoke"], ["4a"], progress=False)
    real_load = scorecard.load_scorecard

    def slow_load(preset, root=None):  # a pause between reading and writing the stored card
        card = real_load(preset, root)
        time.sleep(0.5)
        return card

    monkeypatch.setattr(scorecard, "load_scorecard", slow_load)
    errors = []

    def partial_run(claim):
        try:
            scorecard.reproduce(PRESETS["smoke"], [claim], progress=False)
        except Exception as error:  # a thread's exception would otherwise be lost
            errors.append(error)

    threads = [threading.Thread(target=partial_run, args=(claim,)) for claim in ("1", "3a")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [v.claim for v in real_load("smoke").verdicts] == ["1", "3a", "4a"]


# ---------------------------------------------------------------------------------------------
# Part 5: a write interrupted mid-way leaves the old entry
# ---------------------------------------------------------------------------------------------


class CrashError(Exception):
    """Stands for whatever stops a process in the middle of a write (Ctrl-C, a full disk, kill)."""


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_interrupted_write_leaves_the_old_entry(tmp_path, monkeypatch, where):
    path = tmp_path / "entry.json"
    atomic_json_save({"version": "old"}, path)

    def crash(*args, **kwargs):
        raise CrashError

    with monkeypatch.context() as patch:
        patch.setattr(os, where, crash)
        with pytest.raises(CrashError):
            atomic_json_save({"version": "new", "padding": "x" * 100_000}, path)
    assert checked_json_load(path) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.json"]  # no temporary file left


def test_interrupted_model_write_leaves_no_entry_and_the_next_run_trains(monkeypatch):
    def crash(*args, **kwargs):
        raise CrashError

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(CrashError):
            train_or_load(SPEC, progress=False)
    assert not model_path(SPEC).exists()
    assert not train_or_load(SPEC, progress=False).loaded_from_cache
    assert train_or_load(SPEC, progress=False).loaded_from_cache
