"""The command line: bad input gives one line and exit status 2 before any work starts."""

import subprocess
import sys

import pytest


def run_cli(*args, env_extra=None, tmp_path=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "uni_icl", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0 and "run" in result.stdout and "list" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nonsense"], "experiment: unknown value 'nonsense'; allowed: learnability"),
        (["run", "learnability", "--preset", "huge"], "preset: unknown value 'huge'; allowed: smoke, quick, paper"),
        (["reproduce", "--preset", "huge"], "preset: unknown value 'huge'; allowed: smoke, quick, paper"),
        (["reproduce", "--only", "claim9"], "claim: unknown value 'claim9'; allowed:"),
        (["train", "svm", "pairwise"], "learner: unknown value 'svm'; allowed: icl, icl_authors, matchnet"),
        (
            ["train", "icl", "spiral"],
            "family: unknown value 'spiral'; allowed: amortized, mixture, pairwise, prototype, radius",
        ),
        (["train", "icl", "pairwise", "--n-points", "0"], "n_points: got 0; allowed: integers from 1 to inf"),
        (["train", "icl", "pairwise", "--noise-std", "-1"], "noise_std: got -1.0; allowed: a finite number > 0"),
        (
            ["train", "icl", "linear_regression"],
            "family: unknown value 'linear_regression'; allowed: amortized, mixture,",
        ),
    ],
)
def test_bad_input_is_one_line_with_exit_status_2(args, message, isolated_cache):
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.strip().startswith(f"error: {message}")
    assert "Traceback" not in result.stderr
    assert not isolated_cache.exists()  # nothing written


def test_unwritable_cache_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli("run", "learnability", "--preset", "smoke", env_extra={"UNI_ICL_CACHE": str(blocker / "cache")})
    assert result.returncode == 2 and "cache folder" in result.stderr and "not writable" in result.stderr


def test_smoke_run_prints_the_table_and_second_run_loads(isolated_cache):
    first = run_cli("run", "learnability", "--preset", "smoke", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "ProtoNet   prototype" in first.stdout
    second = run_cli("run", "learnability", "--preset", "smoke", "--no-progress")
    assert second.stdout == first.stdout
