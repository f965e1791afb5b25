"""Results do not depend on the caller's torch thread count (issue 13, part 6).

Training and evaluation run under the package's thread policy (one intra-op thread, restored
afterwards), so a smoke ICL transformer trained and evaluated after ``torch.set_num_threads(1)``
gives the same bits as after ``torch.set_num_threads(2)``. Without the policy they differ: a
reduction split over two threads adds its parts in another order.
"""

import torch

from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.presets import PRESETS
from uni_icl.runs import evaluate_or_load, train_or_load

SMOKE = PRESETS["smoke"].classification


def smoke_numbers(threads, root):
    """Every number of a cold smoke training and evaluation, with ``threads`` torch threads set by the caller."""
    torch.set_num_threads(threads)
    task = classification_task(SMOKE, "pairwise")
    model = train_or_load(classification_run(SMOKE, "icl", task), root=root, progress=False)
    result = evaluate_or_load(model, task, n_tasks=256, seed=1, root=root)
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    history = model.history
    weights = [value.tolist() for value in model.learner.state_dict().values()]
    return [history.train_loss, history.val_loss, history.val_score, weights, result.to_dict()]


def test_training_and_evaluation_give_the_same_bits_with_one_or_two_threads(tmp_path):
    previous = torch.get_num_threads()
    try:
        one = smoke_numbers(1, tmp_path / "one")
        two = smoke_numbers(2, tmp_path / "two")
    finally:
        torch.set_num_threads(previous)
    assert one == two


def test_policy_threads_restores_the_thread_count_after_an_error():
    from uni_icl.device import policy_threads

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        try:
            with policy_threads():
                assert torch.get_num_threads() == 1
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
