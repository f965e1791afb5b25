"""Shipped results (issue 31): lookup order, export, status and verify, on smoke-sized entries.

The store looks in the cache, then in the shipped results (read only), then computes; an export
ships exactly what a finished build read, refuses a build of other code, and ``verify`` retrains
shipped models from scratch and compares their weights.
"""

import dataclasses
import json
from types import SimpleNamespace

import pytest

from uni_icl import results
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.parallel import run_job, train_all
from uni_icl.presets import PRESETS
from uni_icl.runs import evaluate_or_load, model_path, rung_spec, train_or_load
from uni_icl.storage import (
    MissingEntryError,
    atomic_json_save,
    cache_root,
    is_stored,
    offline,
    shipped_roots,
)

SMOKE = PRESETS["smoke"]
TASK = classification_task(SMOKE.classification, "prototype")
SPEC = classification_run(SMOKE.classification, "protonet", TASK)


@pytest.fixture
def shipped(tmp_path, monkeypatch, isolated_cache, set_runtime):
    """A smoke 'build' that trained and evaluated SPEC, exported into tmp_path/results/smoke; then an empty cache."""
    monkeypatch.setattr(results, "git_state", lambda: ("c0ffee" * 7, False))
    base = tmp_path / "results"
    set_runtime(fresh=False, shipped=base)
    reads = results.start_read_log("smoke")
    set_runtime(read_log=reads.log)
    model = train_or_load(SPEC, progress=False)
    score = evaluate_or_load(model, TASK, n_tasks=8, seed=3)
    scorecard = isolated_cache / "scorecards" / "scorecard-smoke.json"
    from uni_icl.storage import atomic_json_save

    atomic_json_save({"preset": "smoke", "verdicts": [], "wall_seconds": 1.0}, scorecard)
    reads.finish(12.0)
    manifest = results.export("smoke", base / "smoke")
    fresh_cache = tmp_path / "fresh-cache"
    set_runtime(read_log=None, cache=fresh_cache)
    return SimpleNamespace(base=base, manifest=manifest, model=model, score=score, cache=fresh_cache)


def test_export_ships_what_the_build_read_with_its_provenance(shipped):
    entries = shipped.manifest["entries"]
    relative = str(model_path(SPEC, shipped.cache).relative_to(shipped.cache))
    assert relative in entries and entries[relative]["weights_hash"] == shipped.model.weights_hash
    assert len(entries) == 2  # the model and its evaluation: nothing else was read
    for key in ("commit", "preset", "torch", "device", "threads", "workers", "wall_seconds"):
        assert key in shipped.manifest
    assert json.loads((shipped.base / "smoke" / "scorecard.json").read_text())["preset"] == "smoke"
    assert shipped_roots() == [shipped.base / "smoke"]


def test_a_fresh_cache_loads_shipped_entries_instead_of_computing(shipped):
    assert is_stored(model_path(SPEC))
    assert train_all([run_job(SPEC)], progress=False) == []  # nothing to train
    with offline():  # computing would raise
        model = train_or_load(SPEC, progress=False)
        score = evaluate_or_load(model, TASK, n_tasks=8, seed=3)
    assert model.loaded_from_cache and model.weights_hash == shipped.model.weights_hash
    assert score == shipped.score


def test_shipped_files_are_never_changed(shipped):
    before = {path: path.read_bytes() for path in (shipped.base / "smoke").rglob("*") if path.is_file()}
    model_path(SPEC).parent.mkdir(parents=True)
    train_or_load(SPEC, progress=False)
    (model_path(SPEC)).write_bytes(b"damaged")  # damage the cached copy: it is discarded, the shipped one stays
    with pytest.warns(UserWarning):
        train_or_load(SPEC, progress=False)
    after = {path: path.read_bytes() for path in (shipped.base / "smoke").rglob("*") if path.is_file()}
    assert before == after


def test_fresh_ignores_the_shipped_results(shipped, set_runtime):
    set_runtime(fresh=True)
    assert shipped_roots() == [] and not is_stored(model_path(SPEC))
    with offline(), pytest.raises(MissingEntryError):
        train_or_load(SPEC, progress=False)


def test_an_entry_of_other_code_is_not_found(shipped):
    other = classification_run(SMOKE.classification, "protonet", TASK, seed=7)
    with offline(), pytest.raises(MissingEntryError):
        train_or_load(other, progress=False)


def test_export_refuses_a_build_of_other_code(shipped, monkeypatch, tmp_path, isolated_cache, set_runtime):
    set_runtime(cache=isolated_cache)  # the cache the build ran in
    monkeypatch.setattr(results, "git_state", lambda: ("beef" * 10, False))
    with pytest.raises(ValueError, match="commit, then build again"):
        results.export("smoke", tmp_path / "elsewhere")
    monkeypatch.setattr(results, "git_state", lambda: ("c0ffee" * 7, True))
    with pytest.raises(ValueError, match="local changes"):
        results.export("smoke", tmp_path / "elsewhere")


def test_status_names_the_first_missing_entry(shipped):
    def run(preset, progress):
        evaluate_or_load(train_or_load(SPEC, progress=False), TASK, n_tasks=8, seed=3)

    def run_more(preset, progress):
        run(preset, progress)
        evaluate_or_load(train_or_load(SPEC, progress=False), TASK, n_tasks=9, seed=3)

    plan = lambda preset: [run_job(SPEC)]  # noqa: E731
    current = SimpleNamespace(__name__="uni_icl.experiments.one", training_plan=plan, run=run)
    stale = SimpleNamespace(__name__="uni_icl.experiments.two", training_plan=plan, run=run_more)
    rows = results.status(SMOKE, [current, stale])
    assert [row["state"] for row in rows] == ["current", "stale"]
    assert rows[0]["shipped"] == 1 and rows[0]["missing"] == 0
    assert rows[1]["first_missing"].startswith("results/protonet-prototype-")


def test_verify_retrains_a_shipped_model_to_identical_weights(shipped):
    chapter = SimpleNamespace(training_plan=lambda preset: [run_job(SPEC)])
    (row,) = results.verify(SMOKE, [chapter], sample=1)
    assert row["identical"] and row["passed"] and row["retrained"] == shipped.model.weights_hash
    assert row["accuracy"][0] == row["accuracy"][1]


def test_verify_refuses_a_shipped_file_that_does_not_hold_its_manifests_weights(shipped, monkeypatch):
    manifest = results.load_manifest("smoke")
    relative = next(name for name in manifest["entries"] if name.startswith("models/"))
    manifest["entries"][relative]["weights_hash"] = "0" * 16
    monkeypatch.setattr(results, "load_manifest", lambda preset: manifest)
    chapter = SimpleNamespace(training_plan=lambda preset: [run_job(SPEC)])
    with pytest.raises(ValueError, match="does not hold the weights"):
        list(results.verify(SMOKE, [chapter], sample=1))


def test_verify_fails_when_the_retrained_weights_differ(shipped, monkeypatch):
    monkeypatch.setattr(results, "weights_hash", lambda weights: "f" * 16)  # the retrained model's hash only
    chapter = SimpleNamespace(training_plan=lambda preset: [run_job(SPEC)])
    (row,) = results.verify(SMOKE, [chapter], sample=1)
    assert not row["identical"] and not row["passed"]
    (row,) = results.verify(SMOKE, [chapter], sample=1, tolerance=0.001)  # equal accuracies: within tolerance
    assert row["passed"]


def test_fresh_recomputes_the_copies_earlier_runs_made_in_the_cache(shipped, set_runtime):
    assert train_or_load(SPEC, progress=False).loaded_from_cache  # copied from the shipped results
    set_runtime(fresh=True)
    assert not is_stored(model_path(SPEC))
    assert not train_or_load(SPEC, progress=False).loaded_from_cache  # recomputed here
    assert train_or_load(SPEC, progress=False).loaded_from_cache  # and now it is this machine's


def test_a_damaged_shipped_file_is_ignored_with_a_warning_and_left_as_it_is(shipped):
    (gz,) = (shipped.base / "smoke" / "models").glob("*.gz")
    gz.write_bytes(b"not gzip")
    with pytest.warns(UserWarning, match="unreadable shipped entry"):
        model = train_or_load(SPEC, progress=False)
    assert not model.loaded_from_cache and gz.read_bytes() == b"not gzip"


def test_a_partial_export_adds_ladders_and_keeps_what_the_plan_still_reads(tmp_path, monkeypatch):
    """Rungs of a planned ladder ship; an earlier export's table stays, its model that no job trains goes."""
    monkeypatch.setattr(results, "git_state", lambda: ("c0ffee" * 7, False))
    old = classification_run(SMOKE.classification, "cnp", TASK, seed=7)
    train_or_load(old, progress=False)
    table = cache_root() / "tables" / "t.json"
    atomic_json_save({"x": 1}, table)
    first = results.export("smoke", tmp_path / "smoke", partial_plan=[run_job(old)])
    assert set(first["entries"]) == {str(model_path(old).relative_to(cache_root()))}
    manifest = json.loads((tmp_path / "smoke" / "manifest.json").read_text())
    manifest["entries"]["tables/t.json"] = {"sha256": "0", "bytes": 1}  # as if an earlier build had read it
    (tmp_path / "smoke" / "manifest.json").write_text(json.dumps(manifest))
    rungs = (10, 20)
    spec = dataclasses.replace(SPEC, train=dataclasses.replace(SPEC.train, max_steps=20, eval_every=10))
    train_or_load(spec, progress=False, rungs=rungs)
    second = results.export("smoke", tmp_path / "smoke", partial_plan=[run_job(spec, rungs=rungs)])
    expected = {str(model_path(rung_spec(spec, r)).relative_to(cache_root())) for r in rungs} | {"tables/t.json"}
    assert set(second["entries"]) == expected


def test_a_partial_export_ships_the_stored_models_of_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "git_state", lambda: ("c0ffee" * 7, False))
    trained = train_or_load(SPEC, progress=False)
    other = classification_run(SMOKE.classification, "protonet", TASK, seed=5)  # planned, not trained yet
    manifest = results.export("smoke", tmp_path / "smoke", partial_plan=[run_job(SPEC), run_job(other)])
    assert manifest["complete"] is False and manifest["models"] == 1
    (row,) = manifest["entries"].values()
    assert row["weights_hash"] == trained.weights_hash
    assert not (tmp_path / "smoke" / "scorecard.json").exists()
    monkeypatch.setattr(results, "git_state", lambda: ("c0ffee" * 7, True))
    with pytest.raises(ValueError, match="local changes"):
        results.export("smoke", tmp_path / "again", partial_plan=[run_job(SPEC)])


def test_the_training_cost_counts_a_budget_ladder_once():
    """The rungs of a ladder are stored on the way by one run: the grid's cost counts that run (its longest
    rung), and every other model by its own time."""
    rows = [
        {"run": "a", "train_seconds": 10.0},
        {"run": "a", "train_seconds": 80.0},
        {"run": "a", "train_seconds": 40.0},
        {"run": "b", "train_seconds": 5.0},
        {"train_seconds": 7.0},
        {"train_seconds": 3.0},
    ]
    assert results.training_core_seconds(rows) == 80.0 + 5.0 + 7.0 + 3.0


def test_only_models_a_longer_run_passes_through_are_rungs_of_one_ladder():
    spec = classification_run(SMOKE.classification, "protonet", TASK)
    short, long = (rung_spec(spec, steps).config() for steps in (10, 20))
    assert results._ladder_run(short) == results._ladder_run(long) is not None
    stopping = dataclasses.replace(spec, train=dataclasses.replace(spec.train, stop_tolerance=0.01))
    assert results._ladder_run(stopping.config()) is None  # an early stop depends on the budget
    assert results._ladder_run({"experiment": "m2icl"}) is None
