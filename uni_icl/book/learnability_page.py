"""Chapter 2's tables and the words that explain its verdicts (presentation of
:mod:`uni_icl.experiments.learnability`; its rules are :mod:`uni_icl.experiments.rules.learnability`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from uni_icl.book.formatting import pm
from uni_icl.evaluation import Difference
from uni_icl.experiments.common import MATCHING_LEARNER, META_LEARNERS, MIXED_FAMILY, SINGLE_FAMILIES
from uni_icl.experiments.evidence import per_seed_difference, row_difference, run_columns, training_note
from uni_icl.experiments.learnability import AUTHORS_VARIANTS, BAYES_NAME, LEARNERS, LearnabilityResults
from uni_icl.experiments.rules.learnability import _is_meta_on, matching_vs_best_other, premise_reading
from uni_icl.learners import display_name
from uni_icl.uncertainty import seeded_difference, t_interval
from uni_icl.verdicts import ClaimVerdict


def _with_ci(mean: float, ci: float) -> str:
    return f"{mean:.3f} ± {ci:.3f}"


def tables(results: LearnabilityResults) -> dict[str, pd.DataFrame]:
    """The chapter's tables: ``cross``, ``training``, ``mixed``, ``bayes_gap``, ``gap_curves``,
    ``faithfulness``, ``bayes_diagnostics``, ``summary``, ``ladder`` (one DataFrame each; see the notebook)."""
    learner_rows = [row for row in results.rows if "runs" in row]  # trained models (not the Bayes rows)
    cross = pd.DataFrame(
        [
            {
                "learner": row["learner"],
                "train family": row["train_family"],
                "test family": row["test_family"],
                "accuracy": row["mean"],
                "ci": row["ci"],
                "per seed": ", ".join(f"{value:.3f}" for value in row["seed_means"]),
            }
            for row in learner_rows
            if row["learner_id"] in LEARNERS
        ]
    )
    seen, training, validation = set(), [], []
    for row in learner_rows:
        key = (row["learner_id"], row["train_family"])
        if key in seen:
            continue
        seen.add(key)
        for run in row["runs"]:
            training.append(
                {
                    "learner": row["learner"],
                    "train family": row["train_family"],
                    **run_columns(run),
                }
            )
            validation += [
                {
                    "learner": row["learner"],
                    "train family": row["train_family"],
                    "seed": run["seed"],
                    "step": step,
                    "validation accuracy": score,
                }
                for step, score in zip(run["val_steps"], run["val_score"], strict=True)
            ]
    return {
        "cross": cross,
        "training": pd.DataFrame(training),
        "validation": pd.DataFrame(validation),
        "mixed": mixed_table(results),
        "bayes_gap": bayes_gap_table(results),
        "gap_curves": gap_curves(results),
        "faithfulness": faithfulness_table(results),
        "premise": premise_table(results),
        "bayes_diagnostics": bayes_diagnostics_table(results),
        "summary": summary_table(results),
        "ladder": pd.DataFrame(results.ladder),
        "price_of_type": price_of_type_table(results),
        "type_posterior": pd.DataFrame(
            [
                {"family": family, "shots": shot, "P(true family)": value}
                for family, curve in results.type_posterior.items()
                for shot, value in enumerate(curve)
            ]
        ),
    }


def price_of_type_table(results: LearnabilityResults) -> pd.DataFrame:
    """Per family: what any learner must lose when the family is unknown (single-family Bayes minus
    mixture-prior Bayes) beside what mixing cost ICL (ICL single minus ICL mixed), with intervals
    (over sampler seeds and episodes for the Bayes predictors, over seeds and episodes for ICL)."""
    records = []
    for family in SINGLE_FAMILIES:
        single_bayes, prior_bayes = (
            results.row("bayes", family, family),
            results.row("bayes_mixture", MIXED_FAMILY, family),
        )
        icl_single, icl_mixed = results.row("icl", family, family), results.row("icl", MIXED_FAMILY, family)
        price, cost = row_difference(single_bayes, prior_bayes), row_difference(icl_single, icl_mixed)
        records.append(
            {
                "family": family,
                "Bayes, this family": single_bayes["mean"],
                "Bayes, mixture prior": prior_bayes["mean"],
                "ICL single": icl_single["mean"],
                "ICL mixed": icl_mixed["mean"],
                "price of not knowing the type": price.mean,
                "price ci": price.ci,
                "what mixing cost ICL": cost.mean,
                "cost ci": cost.ci,
            }
        )
    return pd.DataFrame(records)


def premise_table(results: LearnabilityResults) -> pd.DataFrame:
    """The premise of claim 2-single for both meta-learner shapes: per family and shape, the matching
    meta-learner minus the best other one (paired, 95% interval over seeds and episodes), per seed,
    and how the rule reads it (:func:`premise_reading`)."""
    shapes = {"book (wider)": results.rows, "authors' 2-2-2": results.authors_shapes}
    records = []
    for shape, rows in shapes.items():
        for family in SINGLE_FAMILIES:
            metas = {row["learner_id"]: row for row in rows if _is_meta_on(row, family)}
            if not metas:
                continue
            matching = MATCHING_LEARNER[family]
            best_other, diff = matching_vs_best_other(metas, family)
            records.append(
                {
                    "shape": shape,
                    "family": family,
                    "matching": display_name(matching),
                    "matching accuracy": metas[matching]["mean"],
                    "best other": display_name(best_other),
                    "best other accuracy": metas[best_other]["mean"],
                    "matching - best other": diff.mean,
                    "difference ci": diff.ci,
                    "premise": premise_reading(diff),
                    "per seed": per_seed_difference(metas[matching], metas[best_other]),
                }
            )
    return pd.DataFrame(records)


def mixed_table(results: LearnabilityResults) -> pd.DataFrame:
    """Per learner and test family: single-type vs mixture-trained accuracy and their paired difference."""
    records = []
    for learner in LEARNERS:
        for family in SINGLE_FAMILIES:
            single = results.row(learner, family, family)
            mixed = results.row(learner, MIXED_FAMILY, family)
            diff = row_difference(mixed, single)
            records.append(
                {
                    "learner": display_name(learner),
                    "test family": family,
                    "single-type": single["mean"],
                    "single ci": single["ci"],
                    "mixed": mixed["mean"],
                    "mixed ci": mixed["ci"],
                    "mixed - single": diff.mean,
                    "difference ci": diff.ci,
                }
            )
    return pd.DataFrame(records)


def bayes_gap_table(results: LearnabilityResults) -> pd.DataFrame:
    """Per learner (single-type on the family, and mixture-trained) and family: Bayes - learner, paired."""
    records = []
    for family in SINGLE_FAMILIES:
        limit = results.row("bayes", family, family)
        for learner in LEARNERS:
            for train_family in (family, MIXED_FAMILY):
                row = results.row(learner, train_family, family)
                diff = row_difference(limit, row)
                records.append(
                    {
                        "family": family,
                        "learner": display_name(learner),
                        "trained on": "single type" if train_family == family else "mixture",
                        "accuracy": row["mean"],
                        "Bayes accuracy": limit["mean"],
                        "gap to Bayes": diff.mean,
                        "gap ci": diff.ci,
                    }
                )
    return pd.DataFrame(records)


def gap_curves(results: LearnabilityResults) -> pd.DataFrame:
    """Long table: Bayes - learner accuracy at each shot count (single-type learners on their family).

    The CI combines the two curves' intervals as if independent (sqrt(a^2 + b^2)), which is
    conservative: the episodes are shared, and a paired interval would be narrower.
    """
    records = []
    for family in SINGLE_FAMILIES:
        limit = results.row("bayes", family, family)
        for learner in LEARNERS:
            for train_family in (family, MIXED_FAMILY):
                row = results.row(learner, train_family, family)
                suffix = "" if train_family == family else " (mixture)"
                for shot, (a, a_ci, b, b_ci) in enumerate(
                    zip(
                        limit["per_position"],
                        limit["per_position_ci"],
                        row["per_position"],
                        row["per_position_ci"],
                        strict=True,
                    )
                ):
                    records.append(
                        {
                            "family": family,
                            "learner": display_name(learner) + suffix,
                            "shots": shot,
                            "value": a - b,
                            "ci": math.hypot(a_ci, b_ci),
                        }
                    )
    return pd.DataFrame(records)


def faithfulness_table(results: LearnabilityResults) -> pd.DataFrame:
    """Each form of the authors' ICLer next to the default ICL transformer, trained on the same family,
    per test family (seed 0 of both: the authors' ICLer is trained with one seed; the intervals cover
    test episodes only)."""
    records = []
    for row in results.rows:
        if row["learner_id"] not in AUTHORS_VARIANTS:
            continue
        default = results.row("icl", row["train_family"], row["test_family"])
        diff = seeded_difference(row["per_seed_episode_mean"][:1], default["per_seed_episode_mean"][:1])
        default_mean, default_ci = t_interval(np.asarray(default["per_seed_episode_mean"][0]))
        records.append(
            {
                "form": row["learner"],
                "train family": row["train_family"],
                "test family": row["test_family"],
                "authors' ICLer": row["mean"],
                "ICLer ci": row["ci"],
                # seed 0 only, the seed the difference pairs: beside the mean over seeds, the columns and
                # the difference did not add up
                "default ICL, seed 0": float(default_mean),
                "default ci": float(default_ci),
                "ICLer - default": diff.mean,
                "difference ci": diff.ci,
                "ICLer steps": row["runs"][0]["steps"],
                "ICLer seconds": row["runs"][0]["seconds"],
            }
        )
    return pd.DataFrame(records)


def bayes_diagnostics_table(results: LearnabilityResults) -> pd.DataFrame:
    """Long table of the prototype sampler's diagnostics per shot count (empty if no Monte Carlo ran)."""
    records = []
    for family, evaluation in results.bayes.items():
        if evaluation.exact:
            continue
        for shot in range(len(evaluation.result.per_position)):
            records.append(
                {
                    "family": family,
                    "shots": shot,
                    "mean ESS": evaluation.ess[shot],
                    "min ESS": evaluation.ess_min[shot],
                    "particles": evaluation.n_samples,
                    "MC s.e. of P(true class)": evaluation.mc_stderr[shot],
                    "MC-uncertain decisions": evaluation.uncertain[shot],
                }
            )
    return pd.DataFrame(records)


def summary_table(results: LearnabilityResults) -> pd.DataFrame:
    """The closing note's numbers: per family, mean accuracy (95% CI) of every learner, single and mixed, and Bayes."""
    records = []
    for family in SINGLE_FAMILIES:
        record = {"family": family}
        for learner in LEARNERS:
            for train_family, label in ((family, "single"), (MIXED_FAMILY, "mixed")):
                row = results.row(learner, train_family, family)
                record[f"{display_name(learner)} {label}"] = _with_ci(row["mean"], row["ci"])
        limit = results.row("bayes", family, family)
        record[BAYES_NAME] = _with_ci(limit["mean"], limit["ci"])
        records.append(record)
    return pd.DataFrame(records).set_index("family")


def _explain_single(numbers: dict) -> str:
    families = [f for f in SINGLE_FAMILIES if f in numbers]
    margin = numbers["margin"]
    icl = {f: premise_reading(Difference(*numbers[f]["icl_minus_best_meta"]), margin) for f in families}
    premise = {f: premise_reading(Difference(*numbers[f]["matching_minus_best_other"]), margin) for f in families}
    gaps = ", ".join(f"{f} {pm(numbers[f]['icl_minus_best_meta'])}" for f in families)
    parts = [f"ICL minus the best meta-learner: {gaps}."]
    crossing = [f for f in families if icl[f] == "undetermined"]
    if crossing:
        parts.append(f"On {', '.join(crossing)} that interval crosses -{margin}: ICL neither matches nor falls behind.")
    not_holding = [f for f in families if premise[f] != "holds"]
    if not_holding:
        detail = ", ".join(
            f"{f} ({premise[f]}; best: {numbers[f]['best_meta_learner']}; "
            f"the matching one minus the best other {pm(numbers[f]['matching_minus_best_other'])})"
            for f in not_holding
        )
        parts.append(
            f"The paper's premise, that the matching meta-learner is the best one on its own family, does not hold on "
            f"{detail}."
        )
        parts.append(_authors_premise_text(numbers, not_holding))
    if all(reading == "holds" for reading in icl.values()):
        parts.append("ICL itself matches or beats the best meta-learner on every family, the core of the claim.")
    return " ".join(parts)


def _authors_premise_text(numbers: dict, families: list[str]) -> str:
    """What the authors' 2-2-2 meta-learners say on the families where the book's premise fails."""
    key = "authors_shape_matching_minus_best_other"
    measured = [f for f in families if key in numbers[f]]
    if not measured:
        return "The authors' 2-2-2 meta-learners were not trained at this preset."
    readings = {f: premise_reading(Difference(*numbers[f][key]), numbers["margin"]) for f in measured}
    detail = ", ".join(f"{f} {pm(numbers[f][key])}, {readings[f]}" for f in measured)
    return (
        f"With the authors' 2-2-2 meta-learners, the matching one minus the best other one there: {detail} "
        "(not part of the decision)."
    )


def _explain_mixed(numbers: dict) -> str:
    families = [f for f in SINGLE_FAMILIES if f in numbers]
    margin = numbers["margin"]
    drops = ", ".join(f"{f} {pm(numbers[f]['icl_mixed_minus_single'])}" for f in families)
    text = f"ICL trained on the mixture minus ICL trained on the family itself: {drops} (margin {margin})."
    behind = [f for f in families if sum(numbers[f]["icl_mixed_minus_single"]) < -margin]
    if behind:
        text += f" Mixing cost ICL more than the margin on {', '.join(behind)}."
    if "matchnet_bias_effect" not in numbers:
        return text  # a verdict stored under the previous rule
    effects = ", ".join(
        f"{display_name(m)} {pm(numbers[f'{m}_bias_effect'])} (off-bias drop {pm(numbers[f'{m}_off_bias_drop'])})"
        for m in META_LEARNERS
    )
    text += f" Bias effect of mixing (off-bias drop minus own-family drop): {effects}."
    without = [m for m in META_LEARNERS if numbers[f"{m}_bias_effect"][0] - numbers[f"{m}_bias_effect"][1] > -margin]
    if without:
        names = ", ".join(display_name(m) for m in without)
        text += f" For {names} mixing did not cost clearly more off its bias than on it, as the paper's account needs."
    text += f" ICL's mean drop over the families: {pm(numbers['icl_mean_drop'])}."
    return text


def explain(verdict: ClaimVerdict) -> str:
    """Why the outcome came out as it did, computed from the verdict's numbers (no stored text)."""
    text = _explain_single(verdict.numbers) if verdict.claim == "2-single" else _explain_mixed(verdict.numbers)
    return text + training_note(verdict)
