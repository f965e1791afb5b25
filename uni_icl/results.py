"""Shipped results: what a build read, exported into ``results/<preset>/``, checked and verified.

A book build records the cache-relative path of every entry it read (the runtime's ``read_log``,
started by :func:`start_read_log`) and, once it has finished, a record of the build (commit, preset, torch,
device, threads, workers, wall time). :func:`export` copies exactly those entries into
``results/<preset>/`` with a manifest (each entry's SHA-256, size, and for a model the hash of its
weights, its training seconds and steps) and the scorecard as ``scorecard.json``; it refuses a
build record that is not the current code's (another commit, or local changes under ``uni_icl/``).
The store then finds these entries after the cache (:mod:`uni_icl.storage`).

:func:`status` says per chapter whether the current code finds every entry it reads (it runs
each chapter with computing switched off); :func:`verify` retrains a sample of shipped models
from scratch in an empty cache and compares them with what ships.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from uni_icl.device import policy_threads
from uni_icl.evaluation import evaluate
from uni_icl.parallel import Job
from uni_icl.presets import Preset
from uni_icl.runs import model_path, rung_spec, train_or_load
from uni_icl.runtime import REPOSITORY_RESULTS, current_runtime, use_runtime
from uni_icl.storage import (
    MANIFEST,
    SHIPPED_SUFFIX,
    MissingEntryError,
    atomic_json_export,
    cache_root,
    checked_json_load,
    checked_torch_load,
    config_hash,
    is_stored,
    offline,
    shipped_counterpart,
    shipped_results_off,
    weights_hash,
)

REPOSITORY = REPOSITORY_RESULTS.parent
SCORECARD = "scorecard.json"
SIZE_BUDGET = 30 * 2**20  # bytes of shipped results per preset that the repository may hold


def reads_folder(root: Path | None = None) -> Path:
    return (root or cache_root()) / "reads"


@dataclass(frozen=True)
class ReadLog:
    """The read log of one build of ``preset``: ``log`` lists the entries read, ``record`` describes the build."""

    preset: str
    log: Path
    record: Path

    def finish(self, wall_seconds: float) -> None:
        """Write the build's record: the log is then complete for this commit."""
        atomic_json_export({**provenance(self.preset), "wall_seconds": round(wall_seconds, 1)}, self.record)


def start_read_log(preset: str) -> ReadLog:
    """Start an empty read log for a build of ``preset`` (the build makes it its runtime's ``read_log``)."""
    folder = reads_folder()
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()  # kernels run in another working directory
    reads = ReadLog(preset, folder / f"book-{preset}.log", folder / f"book-{preset}.json")
    reads.record.unlink(missing_ok=True)
    reads.log.write_text("")
    return reads


def git_state() -> tuple[str, bool]:
    """The checkout's commit and whether ``uni_icl/`` has local changes (``("unknown", True)`` outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "uni_icl"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, bool(changes)


def provenance(preset: str) -> dict:
    """Where results of ``preset`` computed here come from: commit, versions, device, threads and workers."""
    commit, dirty = git_state()
    runtime = current_runtime()
    return {
        "preset": preset,
        "commit": commit,
        "local_changes": dirty,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": runtime.device.type,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": runtime.threads,
        "workers": runtime.workers,
    }


def _entry_bytes(relative: str) -> bytes:
    """The stored entry ``relative`` to the cache (checksum line included): the cache's, else the shipped one."""
    path = cache_root() / relative
    if path.is_file():
        data = path.read_bytes()
        digest, _, payload = data.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError(f"results export: {relative} is damaged in the cache (checksum); build again")
        return data
    shipped = shipped_counterpart(path)
    if shipped is None:
        raise ValueError(f"results export: {relative} was read by the build but is neither cached nor shipped")
    return gzip.decompress(shipped.read_bytes())


def _describe(relative: str, data: bytes, shipped_bytes: int) -> dict:
    """The manifest row of one entry: the SHA-256 of the entry, its shipped (compressed) size; for a model,
    its weights hash, training seconds and steps."""
    row = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": shipped_bytes}
    if relative.endswith(".pt"):
        stored = torch.load(io.BytesIO(data.partition(b"\n")[2]), map_location="cpu", weights_only=True)
        if isinstance(stored, dict) and "weights" in stored:
            history = stored.get("history", {})
            row["weights_hash"] = weights_hash(stored["weights"])
            row["train_seconds"] = round(float(history.get("seconds", 0.0)), 1)
            steps = history.get("steps") or [0]
            row["steps"] = int(steps[-1])
            run = _ladder_run(stored.get("config"))
            if run is not None:
                row["run"] = run
    return row


def _ladder_run(config) -> str | None:
    """For a model whose training a longer run of the same configuration passes through (a constant
    learning rate, no early stopping, no time limit: the budget ladder's condition, runs.check_rungs), the
    hash of its configuration without the step budget; otherwise None."""
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict) or "max_steps" not in train:
        return None
    if train.get("lr_schedule") != "constant" or train.get("patience") or train.get("stop_tolerance"):
        return None
    if train.get("time_limit_s"):
        return None
    return config_hash({**config, "train": {k: v for k, v in train.items() if k != "max_steps"}})


def training_core_seconds(rows: list[dict]) -> float:
    """Core-seconds of training the models of ``rows`` (manifest rows) cost from an empty cache: models of
    one budget ladder (the same ``run``) are one training, which costs what its longest rung recorded;
    every other model its own recorded time."""
    ladders: dict[str, float] = {}
    total = 0.0
    for row in rows:
        if "run" in row:
            ladders[row["run"]] = max(ladders.get(row["run"], 0.0), row["train_seconds"])
        else:
            total += row["train_seconds"]
    return round(total + sum(ladders.values()), 1)


def export(preset: str, destination: Path | None = None, *, partial_plan: list[Job] | None = None) -> dict:
    """Copy the entries the last complete build of ``preset`` read into ``destination`` (default
    ``results/<preset>/``), with the manifest and the scorecard; returns the manifest.

    Refuses (ValueError, one line) a build that did not finish, that ran another commit than the
    checkout's, or that ran with local changes under ``uni_icl/``: its entries may not be the current
    code's. Entries of an earlier export that the build did not read are removed.

    ``partial_plan`` (the jobs of the book's training plans) exports instead every model of those
    jobs that is stored (with the models of their budget ladders), with no build needed and no
    scorecard, keeping the earlier export's other entries (its models only where the plan still has
    them): unfinished work, shipped so that a fresh
    machine resumes from it (the manifest says ``"complete": false``).
    """
    destination = destination or REPOSITORY_RESULTS / preset
    folder = reads_folder()
    commit, dirty = git_state()
    if partial_plan is not None:
        if dirty:
            raise ValueError(
                f"results export: the checkout {commit[:12]} has local changes under uni_icl/; commit first"
            )
        record = {**provenance(preset), "wall_seconds": None, "complete": False}
        paths = [job.path for job in partial_plan]
        paths += [
            model_path(rung_spec(job.spec, rung), job.root) for job in partial_plan if job.rungs for rung in job.rungs
        ]
        planned = {str(path.relative_to(cache_root())) for path in paths}
        stored = {str(path.relative_to(cache_root())) for path in paths if is_stored(path)}
        earlier = _plain_json(destination / MANIFEST) or {}
        # the earlier export's tables and results, and those of its models the plan still trains
        kept = {name for name in earlier.get("entries", {}) if not name.startswith("models/") or name in planned}
        relatives = sorted(stored | kept)
        scorecard = None
    else:
        record = _plain_json(folder / f"book-{preset}.json")
        if record is None:
            raise ValueError(f"results export: no finished {preset} book build in {folder}; run scripts/build_book.sh")
        if record["commit"] != commit or record["local_changes"] or dirty:
            raise ValueError(
                f"results export: the last {preset} build ran commit {record['commit'][:12]}"
                f"{' with local changes' if record['local_changes'] else ''}, the checkout is {commit[:12]}"
                f"{' with local changes' if dirty else ''}; commit, then build again"
            )
        record = {**record, "complete": True}
        relatives = sorted(set(filter(None, (folder / f"book-{preset}.log").read_text().splitlines())))
        scorecard = _plain_json(cache_root() / "scorecards" / f"scorecard-{preset}.json", checksummed=True)
        if scorecard is None:
            raise ValueError(f"results export: no stored {preset} scorecard in the cache; run scripts/build_book.sh")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=destination.parent))
    try:
        entries = {}
        for relative in relatives:
            data = _entry_bytes(relative)
            target = staged / f"{relative}{SHIPPED_SUFFIX}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
            entries[relative] = _describe(relative, data, target.stat().st_size)
        size = sum(row["bytes"] for row in entries.values())
        if size > SIZE_BUDGET:
            raise ValueError(f"results export: {size / 2**20:.1f} MiB is over the {SIZE_BUDGET / 2**20:.0f} MiB budget")
        models = [row for row in entries.values() if "weights_hash" in row]
        manifest = {
            **record,
            "training_core_seconds": training_core_seconds(models),
            "models": len(models),
            "bytes": size,
            "entries": entries,
        }
        if scorecard is not None:
            atomic_json_export(scorecard, staged / SCORECARD)
        atomic_json_export(manifest, staged / MANIFEST)
        if destination.exists():
            shutil.rmtree(destination)
        staged.rename(destination)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return manifest


def _plain_json(path: Path, *, checksummed: bool = False):
    """A JSON file written by :func:`atomic_json_export` (or, ``checksummed``, by ``atomic_json_save``), or None."""
    if not path.is_file():
        return None
    if checksummed:
        return checked_json_load(path)
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def load_manifest(preset: str) -> dict | None:
    """The shipped manifest of ``preset`` (in the runtime's ``shipped`` folder), or None."""
    return _plain_json(current_runtime().shipped / preset / MANIFEST)


def describe_sources(preset: str) -> str:
    """One line for a page's setup output: where this preset's results come from."""
    if shipped_results_off():
        return "results: computed here and kept in the cache (the shipped results are off: UNI_ICL_FRESH=1)"
    manifest = load_manifest(preset)
    if manifest is None:
        return f"results: no shipped {preset} results; models train here, and the cache keeps them"
    hours = manifest["training_core_seconds"] / 3600
    return (
        f"results: the cache, then the shipped {preset} results (commit {manifest['commit'][:7]}, "
        f"{manifest['models']} models, {hours:.1f} core-hours of training); anything else is computed here"
    )


def scorecard_differences(shipped: dict, rebuilt: dict) -> list[str]:
    """Where two scorecard JSONs disagree, one line per claim (wall times aside): outcome, numbers, runs."""

    def by_claim(card: dict) -> dict:
        return {verdict["claim"]: verdict for verdict in card["verdicts"]}

    old, new = by_claim(shipped), by_claim(rebuilt)
    lines = [f"{claim}: only in one scorecard" for claim in sorted(set(old) ^ set(new))]
    for claim in sorted(set(old) & set(new)):
        for field in ("outcome", "numbers", "rests_on", "quantity", "rule"):
            if old[claim].get(field) != new[claim].get(field):
                lines.append(f"{claim}: {field} differs")
    return lines


# ----------------------------------------------------------------------------- status


def status(preset: Preset, chapters) -> list[dict]:
    """Per chapter: its models stored in the cache, shipped, or missing, and whether the current code
    finds every entry its ``run`` and its ``PAGE_ENTRIES`` functions read (``"current"``) or not
    (``"stale"``, naming the first one)."""
    rows = []
    for chapter in chapters:
        plan = chapter.training_plan(preset)
        cached = sum(job.path.is_file() for job in plan)
        shipped = sum(not job.path.is_file() and shipped_counterpart(job.path) is not None for job in plan)
        name = chapter.__name__.rsplit(".", 1)[-1]
        row = {"chapter": name, "models": len(plan), "cached": cached, "shipped": shipped}
        row["missing"] = len(plan) - cached - shipped
        try:
            with offline():
                chapter.run(preset, progress=False)
                for name in getattr(chapter, "PAGE_ENTRIES", ()):  # entries only its page reads
                    getattr(chapter, name)(preset)
            row["state"], row["first_missing"] = "current", None
        except MissingEntryError as missing:
            row["state"], row["first_missing"] = "stale", str(missing.path.relative_to(cache_root()))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- verify


@contextmanager
def empty_cache(*, shipped: bool) -> Iterator[Path]:
    """A fresh temporary cache; without ``shipped``, the shipped results are ignored too (everything computes)."""
    with (
        tempfile.TemporaryDirectory(prefix="uni_icl_verify_") as folder,
        use_runtime(replace(current_runtime(), cache=Path(folder), fresh=not shipped)),
    ):
        yield Path(folder)


def verifiable_jobs(preset: Preset, chapters, manifest: dict, max_seconds: float) -> list[tuple[Job, dict]]:
    """Shipped models that train on their own (stage 0) in at most ``max_seconds``, with their manifest rows."""
    entries = manifest["entries"]
    jobs = {}
    for chapter in chapters:
        for job in chapter.training_plan(preset):
            relative = str(job.path.relative_to(cache_root()))
            row = entries.get(relative)
            if job.stage == 0 and row and "weights_hash" in row and row["train_seconds"] <= max_seconds:
                jobs[relative] = (job, row)
    return [jobs[relative] for relative in sorted(jobs)]


VERIFY_EPISODES, VERIFY_SEED = 256, 999_999  # the test episodes a retrained model is scored on beside the shipped one


def verify(
    preset: Preset, chapters, *, sample: int, seed: int = 0, max_seconds: float = float("inf"), tolerance: float = 0.0
) -> Iterator[dict]:
    """Retrain ``sample`` shipped models (chosen with ``seed``) from scratch in an empty cache; yield one row
    per model: both weights hashes, ``identical``, and for a plain run both models' accuracy on the same
    ``VERIFY_EPISODES`` test episodes of its training family; ``passed`` if the weights are identical
    (what one torch thread per process gives on one kind of machine), or, with a ``tolerance`` above 0
    (another machine, other threads), if the accuracies differ by at most ``tolerance``.

    Equal weights hashes mean every number computed from the model is equal too: derived entries are
    keyed by that hash (:func:`uni_icl.storage.weights_hash`).
    """
    manifest = load_manifest(preset.name)
    if manifest is None:
        raise ValueError(f"--preset: no shipped results for {preset.name}; allowed: a preset under results/")
    candidates = verifiable_jobs(preset, chapters, manifest, max_seconds)
    if not candidates:
        raise ValueError(f"--max-seconds: no shipped model trains in {max_seconds} s; allowed: a larger bound")
    chosen = random.Random(seed).sample(candidates, min(sample, len(candidates)))
    for job, row in chosen:
        relative = job.path.relative_to(cache_root())
        started = time.perf_counter()
        with empty_cache(shipped=True), offline():  # the shipped entry itself, copied into an empty cache
            shipped = train_or_load(job.spec, progress=False) if job.spec is not None else None
        if shipped is not None and shipped.weights_hash != row["weights_hash"]:
            raise ValueError(f"results verify: the shipped {relative} does not hold the weights its manifest lists")
        with empty_cache(shipped=False):
            job.run()
            retrained = train_or_load(job.spec, progress=False) if job.spec is not None else None
            stored = checked_torch_load(cache_root() / relative)
        result = {
            "label": job.label,
            "entry": str(relative),
            "shipped": row["weights_hash"],
            "retrained": weights_hash(stored["weights"]),
            "seconds": time.perf_counter() - started,
            "shipped_seconds": row["train_seconds"],
        }
        result["identical"] = result["retrained"] == result["shipped"]
        if shipped is not None:
            result["accuracy"] = [_verify_score(model) for model in (shipped, retrained)]
        gap = abs(result["accuracy"][0] - result["accuracy"][1]) if "accuracy" in result else float("inf")
        result["passed"] = result["identical"] or (tolerance > 0 and gap <= tolerance)
        yield result


def _verify_score(model) -> float:
    with policy_threads():
        return evaluate(model.learner, model.spec.task, n_tasks=VERIFY_EPISODES, seed=VERIFY_SEED).mean
