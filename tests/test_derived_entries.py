"""Derived entries are keyed by the weights they were computed from (issue 34, item 1).

Replacing a model's stored weights with another model's (retrained elsewhere, restored from
shipped results, edited) must make every evaluation, table and distilled model computed from the
old weights stale: the next run recomputes them instead of serving the old numbers.
"""

import pytest
import torch

from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.presets import PRESETS
from uni_icl.runs import derived_model_validator, evaluate_or_load, model_path, train_or_load
from uni_icl.storage import atomic_torch_save, checked_torch_load, weights_hash

SMOKE = PRESETS["smoke"].classification
TASK = classification_task(SMOKE, "prototype")
SPEC = classification_run(SMOKE, "protonet", TASK, seed=0)
OTHER = classification_run(SMOKE, "protonet", TASK, seed=1)


def test_weights_hash_follows_values_names_and_shapes():
    a = {"w": torch.zeros(2, 3), "b": torch.ones(3)}
    assert weights_hash(a) == weights_hash({k: v.clone() for k, v in a.items()})
    assert weights_hash(a) != weights_hash({"w": torch.zeros(2, 3), "b": torch.tensor([1.0, 1.0, 1.0 + 1e-7])})
    assert weights_hash(a) != weights_hash({"w": torch.zeros(3, 2), "b": torch.ones(3)})
    assert weights_hash(a) != weights_hash({"v": torch.zeros(2, 3), "b": torch.ones(3)})
    assert weights_hash({"scalar": torch.tensor(2.0)}) != weights_hash({"scalar": torch.tensor(3.0)})


def swap_weights(spec, donor):
    """Replace ``spec``'s stored weights with ``donor``'s (a valid entry: only its content changed)."""
    path = model_path(spec)
    entry = checked_torch_load(path)
    entry["weights"] = checked_torch_load(model_path(donor))["weights"]
    atomic_torch_save(entry, path)


def test_swapping_a_models_weights_makes_its_evaluation_stale():
    test = classification_task(SMOKE, "pairwise")
    first = evaluate_or_load(train_or_load(SPEC, progress=False), test, n_tasks=8, seed=5)
    donor = train_or_load(OTHER, progress=False)
    donor_score = evaluate_or_load(donor, test, n_tasks=8, seed=5)
    assert first.mean != donor_score.mean  # two seeds, two models: the swap is visible

    swap_weights(SPEC, OTHER)
    reloaded = train_or_load(SPEC, progress=False)
    assert reloaded.loaded_from_cache and reloaded.weights_hash == donor.weights_hash
    after = evaluate_or_load(reloaded, test, n_tasks=8, seed=5)
    assert after.mean == donor_score.mean  # recomputed from the new weights, not the old score served


def test_a_model_derived_from_replaced_weights_is_stale():
    learner = train_or_load(SPEC, progress=False).learner
    entry = {"weights": learner.state_dict(), "history": checked_torch_load(model_path(SPEC))["history"], "config": {}}
    validate = derived_model_validator(learner, {"teacher": "a" * 16})
    validate({**entry, "sources": {"teacher": "a" * 16}})
    with pytest.raises(ValueError, match="stale"):
        validate({**entry, "sources": {"teacher": "b" * 16}})
    with pytest.raises(ValueError, match="stale"):
        validate(entry)  # an entry that does not say what it came from
