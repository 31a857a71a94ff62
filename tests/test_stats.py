"""Statistics of a comparison: Holm, Friedman and Nemenyi by hand, the verdicts in words."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from lrsched_cli import report, stats, store


def history(final: float, seed: int, name: str, status: str = "completed"):
    epochs = [{"epoch": 1, "lr": 0.1, "val_loss": final, "train_loss": final}]
    summary = {"status": status, "seed": seed}
    return store.RunHistory(
        Path(f"{name}-{seed}"), {"name": name, "scheduler": {"name": "X"}}, epochs, [], summary
    )


def summaries_of(finals: dict[str, list[float]]) -> list[stats.ConfigSummary]:
    groups = {
        name: [history(value, seed, name) for seed, value in enumerate(values)]
        for name, values in finals.items()
    }
    return stats.rank(stats.summarize(groups, None), "final_val_loss")


def test_holm_matches_hand_computed_values():
    # sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1 -> 0.02, 0.03, 0.06, max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; an untested pair (None) stays None and is not counted in m (here 2)
    assert stats.holm([0.6, None, 0.2]) == pytest.approx([0.6, None, 0.4])
    assert stats.holm([0.7, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_holm_is_not_holm_sidak():
    # Holm-Sidak would give 1 - (1 - 0.02)^2 = 0.0396 for the smaller of the two
    assert stats.holm([0.02, 0.5]) == pytest.approx([0.04, 0.5])


def test_friedman_matches_hand_computed_values():
    # 4 seeds x 3 configs, no ties; lower is better, so rank 1 is the lowest loss
    finals = {
        "a": [0.1, 0.2, 0.1, 0.3],  # ranks 1, 1, 1, 2
        "b": [0.2, 0.3, 0.3, 0.2],  # ranks 2, 2, 3, 1
        "c": [0.3, 0.4, 0.2, 0.4],  # ranks 3, 3, 2, 3
    }
    result = stats.friedman(summaries_of(finals), "final_val_loss", None)
    assert result.names == ["a", "b", "c"] and result.seeds == [0, 1, 2, 3]
    assert result.mean_ranks == pytest.approx([5 / 4, 8 / 4, 11 / 4])
    # chi2 = 12 / (n k (k + 1)) * sum(R_j^2) - 3 n (k + 1), rank sums 5, 8, 11
    chi2 = 12 / (4 * 3 * 4) * (5**2 + 8**2 + 11**2) - 3 * 4 * 4
    assert chi2 == pytest.approx(4.5)
    assert result.statistic == pytest.approx(chi2)
    assert result.p == pytest.approx(math.exp(-chi2 / 2))  # chi-squared, 2 dof: e^(-x/2)
    # Nemenyi (Demsar 2006, Table 5a): q_0.05 = 2.343 for 3 configs; CD = q sqrt(k(k+1)/6n)
    assert result.critical_difference == pytest.approx(2.343 * math.sqrt(12 / 24), abs=1e-3)


def test_friedman_leaves_out_a_config_with_no_completed_run():
    finals = {"a": [0.1, 0.2], "b": [0.2, 0.3], "c": [0.3, 0.1], "broken": [0.5, 0.5]}
    summaries = summaries_of(finals)
    broken = next(s for s in summaries if s.name == "broken")
    broken.runs = [history(0.5, seed, "broken", status="failed") for seed in (0, 1)]
    result = stats.friedman(summaries, "final_val_loss", None)
    assert sorted(result.names) == ["a", "b", "c"] and result.seeds == [0, 1]
    assert set(result.row()["mean_ranks"]) == {"a", "b", "c"}
    broken_too = [s for s in summaries if s.name in ("a", "broken")]
    assert stats.friedman(broken_too, "final_val_loss", None) is None


def test_friedman_ranks_accuracy_highest_first_and_needs_three_configs():
    groups = {
        name: [
            store.RunHistory(
                Path(f"{name}-{seed}"),
                {"name": name, "scheduler": {"name": "X"}},
                [{"epoch": 1, "lr": 0.1, "val_loss": 1.0, "val_accuracy": acc}],
                [],
                {"status": "completed", "seed": seed},
            )
            for seed, acc in enumerate(values)
        ]
        for name, values in {"a": [0.9, 0.8], "b": [0.7, 0.6], "c": [0.5, 0.95]}.items()
    }
    summaries = stats.summarize(groups, None)
    result = stats.friedman(summaries, "final_val_accuracy", None)
    assert result.mean_ranks == pytest.approx([1.5, 2.5, 2.0])
    assert stats.friedman(summaries[:2], "final_val_accuracy", None) is None


def test_the_smallest_wilcoxon_p_and_the_seeds_a_family_needs():
    from scipy import stats as scipy_stats

    for n in (3, 5, 6):
        same_sign = scipy_stats.wilcoxon([float(i) for i in range(n)], [i + 1.5 for i in range(n)])
        assert stats.smallest_p(n) == pytest.approx(same_sign.pvalue) == 2 ** (1 - n)
    assert stats.pair_count(5, baseline=False) == 10 and stats.pair_count(5, baseline=True) == 4
    assert stats.seeds_needed(10) == 9  # 10 x 2^-8 = 0.039 < 0.05; 10 x 2^-7 = 0.078
    assert stats.seeds_needed(4) == 8 and stats.seeds_needed(1) == 6
    assert stats.seed_power_note(10, 10) is None
    note = stats.seed_power_note(3, 10)
    assert "3 paired seeds" in note and "10 pairs" in note and "9 seeds or more" in note


def test_pairs_against_a_baseline_are_k_minus_1_and_adjusted_over_those():
    finals = {
        "a": [0.1 * i for i in range(1, 9)],
        "b": [0.1 * i + 0.05 + 0.01 * (i % 3) for i in range(1, 9)],
        "c": [0.1 * i + 0.01 * (-1) ** i for i in range(1, 9)],
    }
    summaries = summaries_of(finals)
    rows = stats.pairwise(summaries, "final_val_loss", None, baseline="b")
    assert [(row["a"], row["b"]) for row in rows] == [("a", "b"), ("c", "b")]
    assert [row["holm_p"] for row in rows] == pytest.approx(
        stats.holm([row["wilcoxon_p"] for row in rows])
    )
    assert len(stats.pairwise(summaries, "final_val_loss", None)) == 3


def test_a_pair_row_has_the_difference_interval_wins_and_both_p_values():
    finals = {"a": [0.30, 0.20, 0.25, 0.22], "b": [0.40, 0.35, 0.45, 0.30]}
    (row,) = stats.pairwise(summaries_of(finals), "final_val_loss", None)
    differences = [-0.10, -0.15, -0.20, -0.08]
    mean = sum(differences) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3) * s / sqrt(4)
    assert row["mean_difference"] == pytest.approx(mean)
    assert (row["difference_ci_low"], row["difference_ci_high"]) == pytest.approx(
        (mean - half, mean + half)
    )
    assert (row["a_wins"], row["b_wins"], row["better"]) == (4, 0, "a")
    assert row["wilcoxon_p"] == pytest.approx(0.125) and row["holm_p"] == pytest.approx(0.125)
    assert row["ttest_p"] is not None


def test_the_same_value_in_every_seed_is_no_difference_not_an_error():
    (row,) = stats.pairwise(summaries_of({"a": [0.2] * 4, "b": [0.2] * 4}), "final_val_loss", None)
    assert row["wilcoxon_p"] == 1.0 and row["holm_p"] == 1.0 and row["ttest_p"] is None


TEN = [0.30, 0.31, 0.29, 0.33, 0.30, 0.32, 0.28, 0.31, 0.30, 0.29]


def test_the_verdict_of_a_significant_pair():
    finals = {"cosine": [v - 0.012 - 0.001 * (i % 3) for i, v in enumerate(TEN)], "step": TEN}
    rows = stats.pairwise(summaries_of(finals), "final_val_loss", None)
    (line,) = stats.verdicts(rows, "final_val_loss")
    # differences -0.012 - 0.001 (i % 3): mean -0.0129, s = 0.000876, t(0.975, 9) = 2.262,
    # half-width 0.00063: to its first significant digit. 10 of 10 seeds: exact p = 2 / 2^10
    assert line == (
        "cosine beats step: 10/10 seeds, mean −0.0129 [−0.0135, −0.0123], Holm p = 0.002"
    )


def test_the_verdict_of_a_pair_that_differs_in_no_significant_way():
    noise = [0.01, -0.012, 0.008, -0.009, 0.011, -0.01, 0.007, -0.008, 0.012, -0.011]
    finals = {"onecycle": [v + d for v, d in zip(TEN, noise, strict=True)], "cosine": TEN}
    rows = stats.pairwise(summaries_of(finals), "final_val_loss", None)
    (line,) = stats.verdicts(rows, "final_val_loss")
    p = rows[0]["holm_p"]
    assert p > 0.05
    assert line == f"{rows[0]['a']} vs {rows[0]['b']}: no significant difference (Holm p = {p:.2g})"


def test_the_verdict_says_when_too_few_seeds_can_tell_nothing():
    finals = {"a": [0.1, 0.2, 0.3], "b": [0.5, 0.65, 0.7], "c": [0.9, 1.0, 1.2]}
    rows = stats.pairwise(summaries_of(finals), "final_val_loss", None)
    lines = stats.verdicts(rows, "final_val_loss")
    assert lines[0].startswith("With 3 paired seeds no pair can reach Holm p < 0.05 over 3 pairs")
    assert lines[1:] == [
        "a vs b: cannot tell with 3 seeds (Holm p = 0.75)",
        "a vs c: cannot tell with 3 seeds (Holm p = 0.75)",
        "b vs c: cannot tell with 3 seeds (Holm p = 0.75)",
    ]


def test_accuracy_differences_read_in_percentage_points():
    row = {
        "a": "x",
        "b": "y",
        "paired_seeds": 10,
        "a_wins": 9,
        "b_wins": 1,
        "better": "x",
        "mean_difference": 0.012,
        "difference_ci_low": 0.004,
        "difference_ci_high": 0.02,
        "holm_p": 0.01,
    }
    assert stats.verdict(row, "final_val_accuracy", 1) == (
        "x beats y: 9/10 seeds, mean 1.2 pp [0.4 pp, 2.0 pp], Holm p = 0.01"
    )


def render(renderable, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def marks(text: str) -> dict[str, str]:
    """config name -> its mark cell, from a rendered ranking table."""
    found = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 3 and cells[2]:
            found[cells[2]] = cells[1]
    return found


def test_approx_comes_from_the_paired_test_not_from_overlapping_intervals():
    # The configs/compare/ case: "good" wins every seed by a little, while the seeds move both
    # configs a lot, so the per-config intervals overlap widely. Each "near" config is its
    # twin give or take 0.001, one way and the other.
    spread = [0.1, 0.5, 0.3, 0.9, 0.2, 0.7, 0.4, 0.8, 0.6, 1.0]
    good = [v - 0.01 - 0.002 * (i % 3) for i, v in enumerate(spread)]
    finals = {
        "good": good,
        "near_good": [v + 0.001 * (-1) ** i for i, v in enumerate(good)],
        "worse": spread,
        "near_worse": [v + 0.001 * (-1) ** i for i, v in enumerate(spread)],
    }
    summaries = summaries_of(finals)
    by_name = {s.name: s.metrics["final_val_loss"] for s in summaries}
    assert by_name["good"].overlaps(by_name["worse"])  # what the old ≈ went by
    rows = stats.pairwise(summaries, "final_val_loss", None)
    text = render(report.render_comparison(summaries, "final_val_loss", rows))
    assert marks(text) == {"good": "★", "near_good": "≈", "worse": "", "near_worse": ""}
    assert "≈ no significant difference from the best (★): paired Wilcoxon" in text
    with_baseline = stats.pairwise(summaries, "final_val_loss", None, baseline="worse")
    text = render(report.render_comparison(summaries, "final_val_loss", with_baseline, "worse"))
    assert marks(text) == {"good": "★", "near_good": "", "worse": "◆", "near_worse": "≈"}
    assert "from the baseline worse (◆)" in text
