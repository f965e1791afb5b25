"""Reliability with real processes: a killed training run resumes to the same result, and two
processes computing the same cache entry at once neither corrupt it nor both train."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import json, sys
from uni_icl.learners import LearnerSpec
from uni_icl.runs import RunSpec, evaluate_or_load, train_or_load
from uni_icl.runtime import install_runtime, runtime_from_env
from uni_icl.tasks import make_task
from uni_icl.training import TrainConfig

install_runtime(runtime_from_env())  # a script is an edge: it reads UNI_ICL_CACHE here
task = make_task("prototype", n_points=16)
config = TrainConfig(max_steps=int(sys.argv[1]), batch_size=16, eval_every=10, n_val_tasks=32, checkpoint_every=10)
spec = RunSpec(LearnerSpec("icl", {"width": 16, "depth": 2, "n_heads": 2}), task, config)
model = train_or_load(spec, progress=False)
result = evaluate_or_load(model, task, n_tasks=64, seed=3)
print(json.dumps({"cached": model.loaded_from_cache, "mean": result.mean, "val": model.history.val_score}))
"""


def start(cache, steps, **kwargs):
    env = {**os.environ, "UNI_ICL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(steps)], env=env, text=True, stdout=subprocess.PIPE, **kwargs
    )


def finish(process):
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, kill_signal):
    steps = 300
    reference = finish(start(tmp_path / "reference", steps))
    cache = tmp_path / "killed"
    process = start(cache, steps)
    deadline = time.monotonic() + 300
    while not list((cache / "models").glob("*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(kill_signal)
    process.communicate(timeout=60)
    assert process.returncode != 0
    assert list((cache / "models").glob("*.ckpt")), "no checkpoint left to resume from"
    assert not list((cache / "models").glob("*.pt")), "an unfinished run must not store a model"
    resumed = finish(start(cache, steps))
    assert not resumed["cached"]
    assert resumed["val"] == reference["val"] and resumed["mean"] == reference["mean"]


def test_two_processes_on_the_same_entry(tmp_path):
    cache = tmp_path / "shared"
    first, second = start(cache, 60), start(cache, 60)
    results = [finish(first), finish(second)]
    assert sorted(r["cached"] for r in results) == [False, True]  # one trained, the other waited and loaded
    assert results[0]["mean"] == results[1]["mean"]
    assert finish(start(cache, 60))["cached"]
    assert not list(cache.rglob("*.tmp"))
