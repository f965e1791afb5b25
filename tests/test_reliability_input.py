"""Bad input never becomes a traceback or a cached result (issue 13, part 4).

Each case: one line on stderr naming the parameter, exit status 2, before any work starts (the
cache folder is not even created); a non-finite loss or score stops the run with nothing cached;
Ctrl-C is one line and exit status 130, with the checkpoint kept for the next run.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.presets import PRESETS
from uni_icl.runs import evaluate_or_load, train_or_load

SMOKE = PRESETS["smoke"].classification


def run_cli(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "uni_icl", *args], capture_output=True, text=True, env=env, timeout=300
    )


def one_error_line(result):
    """The single stderr line of a run that ended with exit status 2."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("n_points", ["1000000000000", "100000000"])
def test_huge_sizes_are_refused_before_any_work(isolated_cache, n_points):
    line = one_error_line(run_cli("train", "icl", "pairwise", "--preset", "smoke", "--n-points", n_points))
    assert line.startswith(f"error: n_points: got {n_points}; allowed: integers from 1 to ")
    assert not isolated_cache.exists()  # no lock, no checkpoint, nothing


def test_a_size_the_machine_holds_is_accepted(isolated_cache):
    result = run_cli("train", "protonet", "pairwise", "--preset", "smoke", "--n-points", "40", "--no-progress")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("learner", "noise"), [("protonet", "1e308"), ("icl", "1e39"), ("icl", "1e20")])
def test_noise_that_overflows_is_refused_before_any_work(isolated_cache, learner, noise):
    line = one_error_line(run_cli("train", learner, "prototype", "--preset", "smoke", "--noise-std", noise))
    assert line.startswith("error: noise_std: ") and "inf or NaN" in line
    assert not isolated_cache.exists()


def test_non_finite_training_loss_stops_the_run_with_nothing_cached(isolated_cache):
    spec = classification_run(
        SMOKE, "icl", classification_task(SMOKE, "prototype", noise_std=1e20)
    )  # finite inputs, NaN outputs
    with pytest.raises(ValueError, match="training loss"):
        train_or_load(spec, progress=False)
    assert not [path for path in isolated_cache.rglob("*") if path.is_file() and path.suffix != ".lock"]


def test_non_finite_scores_are_not_cached(isolated_cache):
    model = train_or_load(classification_run(SMOKE, "icl", classification_task(SMOKE, "prototype")), progress=False)
    with pytest.raises(ValueError, match="noise_std"):
        evaluate_or_load(model, classification_task(SMOKE, "prototype", noise_std=1e20), n_tasks=32, seed=0)
    assert not list((isolated_cache / "results").glob("*.json"))


@pytest.mark.parametrize("case", ["a folder", "empty", "under a file"])
def test_bad_output_is_refused_before_any_work(isolated_cache, tmp_path, case):
    if case == "a folder":
        output = tmp_path
    elif case == "empty":
        output = ""
    else:
        (tmp_path / "file").write_text("x")
        output = tmp_path / "file" / "card.json"
    line = one_error_line(run_cli("reproduce", "--preset", "smoke", "--only", "4a", "--output", str(output)))
    assert line.startswith("error: --output: ")
    assert not isolated_cache.exists()


def test_empty_cache_variable_is_an_error(tmp_path):
    result = run_cli(
        "train", "protonet", "prototype", "--preset", "smoke", env_extra={"UNI_ICL_CACHE": "", "HOME": str(tmp_path)}
    )
    assert one_error_line(result).startswith("error: UNI_ICL_CACHE: set to an empty string")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nonsense"],
        ["train"],
        ["train", "icl", "pairwise", "--n-points", "many"],
        ["reproduce", "--bogus"],
    ],
)
def test_argument_errors_are_one_line(isolated_cache, args):
    assert "--help" in one_error_line(run_cli(*args))


def test_ctrl_c_is_one_line_with_exit_status_130_and_keeps_the_checkpoint(isolated_cache):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "uni_icl", "train", "icl", "prototype", "--preset", "quick", "--no-progress"]
    process = subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((isolated_cache / "models").glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(15)  # well into the training loop, even on a loaded machine (3 s was not, once)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("interrupted: ICL on prototype: stopped at step ")
    assert "checkpoint saved in" in line and "run the same command again to resume" in line
    [checkpoint] = (isolated_cache / "models").glob("*.ckpt")
    assert str(checkpoint) in line
