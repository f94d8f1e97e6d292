"""Analysis pages (harness.results.publishing.pages): every figure of a `pages/NAME.md` template comes from the
records, is checked against the same statistics computed here from the raw numbers, and goes stale with them."""

from __future__ import annotations

import logging
import math

import pytest
from scipy import stats as scipy_stats

from harness.api.errors import HarnessError
from harness.cli import main
from harness.results.encoders import EncoderFacts
from harness.results.leaderboard import build, render
from harness.results.publishing.history import write_history
from harness.results.publishing.pages import render_pages
from harness.results.publishing.site import publish
from harness.results.records import write_record
from tests.test_records import make_record

# "ssl" and "base" never read labels, "sup" does; "t-relabelled" trains on t's inputs and views, so ssl's (and
# base's) records on the two tasks share their trained encoders.
FACTS = EncoderFacts(reads_labels={"ssl": False, "base": False, "sup": True}, inputs_of={"t-relabelled": "t"})
BASE = [0.600, 0.610, 0.620]  # per seed, on t; t-relabelled adds 0.05
GAPS = {"ssl": [0.030, 0.034, 0.031], "sup": [0.050, 0.040, 0.049]}  # each row minus base, per seed, on t
CAUSES = ["cause: the critic lagged; fresh 1.0 vs 0.5", "cause: the critic lagged; fresh 2.0 vs 0.5",
          "cause: the estimator cannot bound this term; fresh 3.0 vs 0.5"]
AUDIT_VALUES = [0.5, 1.5, 4.0]


def record(task, method, seed, acc, checks=None):
    return make_record(seed=seed, task={"name": task, "version": "1", "suite": "s", "fingerprint": task, "params": {}},
                       method={"name": method, "display_name": method.upper(), "version": "1"},
                       metrics={"test_acc": acc}, checks=checks or {}, finished_at="2026-12-07T01:00:00+00:00")


def ssl_checks(seed):
    return {"audit": {"held": False, "measurable": True, "value": AUDIT_VALUES[seed], "detail": CAUSES[seed]}}


def sup_checks(seed):
    """Seed 0 not measurable, seeds 1 and 2 held."""
    if seed == 0:
        return {"audit": {"held": False, "measurable": False, "value": None, "detail": "pinned"}}
    return {"audit": {"held": True, "measurable": True, "value": 0.1 * seed, "detail": "below its bound"}}


@pytest.fixture
def root(tmp_path):
    for task, shift in (("t", 0.0), ("t-relabelled", 0.05)):
        for seed in range(3):
            base = BASE[seed] + shift
            write_record(tmp_path, record(task, "base", seed, base))
            write_record(tmp_path, record(task, "ssl", seed, base + GAPS["ssl"][seed], ssl_checks(seed)))
            write_record(tmp_path, record(task, "sup", seed, base + GAPS["sup"][seed], sup_checks(seed)))
    write_history(tmp_path, "t", "ssl", "SSL", None, [], {0: [{"loss": 3.0}, {"loss": 2.0}],
                                                        1: [{"loss": 3.5}, {"loss": 1.0}],
                                                        2: [{"loss": 2.5}, {"loss": 1.5, "other": 9.0}]})
    (tmp_path / "pages").mkdir()
    return tmp_path


def rendered(root, template, facts=FACTS):
    (root / "pages" / "P.md").write_text(template)
    results, tables = build(root, facts)
    pages, warnings, _ = render_pages(root, results, tables, facts, set())
    body = pages["P.md"].split("\n\n", 1)[1]  # after the line that says where the page comes from
    return body.rstrip("\n"), warnings


def t_interval(values):
    mean, sd, n = sum(values) / len(values), scipy_stats.tstd(values), len(values)
    half = scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_a_page_says_where_it_comes_from_and_renders_a_score_as_its_leaderboard_cell(root):
    (root / "pages" / "P.md").write_text("ssl: {{score t ssl}}\n")
    results, tables = build(root, FACTS)
    pages, _, _ = render_pages(root, results, tables, FACTS, set())
    first, _, body = pages["P.md"].partition("\n\n")
    assert "pages/P.md" in first and "harness leaderboard" in first and "edit that template" in first
    scores = [b + g for b, g in zip(BASE, GAPS["ssl"])]
    mean, low, high = t_interval(scores)
    cell = body.removeprefix("ssl: ").rstrip("\n")
    assert cell.startswith(f"{100 * mean:.2f} ± {100 * (high - low) / 2:.2f} (3)")
    assert cell.endswith("⚠")  # every seed failed its audit: the cell's mark comes with it
    leaderboard_row = next(ln for ln in render(root, facts=FACTS).splitlines() if ln.startswith("| SSL "))
    assert cell in leaderboard_row.split("|")[2]


def test_seeds_are_listed_in_seed_order(root):
    text, _ = rendered(root, "{{seeds t sup}}")
    expected = [f"{100 * (b + g):.2f}" for b, g in zip(BASE, GAPS["sup"])]
    assert text == f"{', '.join(expected)} (seeds 0, 1, 2)"


def test_paired_differences_are_holm_corrected_within_their_family_only(root):
    text, _ = rendered(root, "{{paired t ssl base family=f}}\n{{paired t sup base family=f}}\n"
                             "{{paired t ssl base family=f}}\n{{paired t sup ssl}}")
    lines = text.splitlines()
    ssl = [b + g for b, g in zip(BASE, GAPS["ssl"])]
    sup = [b + g for b, g in zip(BASE, GAPS["sup"])]
    p_ssl, p_sup = scipy_stats.ttest_rel(ssl, BASE).pvalue, scipy_stats.ttest_rel(sup, BASE).pvalue
    # Holm by hand on two: the smaller p times 2, the larger times 1, never below the smaller's.
    small, large = sorted([p_ssl, p_sup])
    adjusted = {small: min(1.0, 2 * small), large: min(1.0, max(2 * small, large))}
    for line, scores, p in ((lines[0], ssl, p_ssl), (lines[1], sup, p_sup)):
        mean, low, high = t_interval([a - b for a, b in zip(scores, BASE)])
        assert line == (f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] points (3 paired seeds; "
                        f"p = {adjusted[p]:.2g}, Holm over 2 comparisons of family f)")
    assert lines[2] == lines[0]  # the same comparison written again is not a third test
    mean, low, high = t_interval([a - b for a, b in zip(sup, ssl)])
    assert lines[3] == (f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] points (3 paired seeds; "
                        f"uncorrected p = {scipy_stats.ttest_rel(sup, ssl).pvalue:.2g})")


def test_a_history_value_at_an_epoch_is_its_mean_over_seeds_with_min_and_max(root):
    text, _ = rendered(root, "{{history t ssl loss}} | {{history t ssl loss epoch=1 digits=3}}")
    assert text == (f"{(2.0 + 1.0 + 1.5) / 3:.2f} (1.00–2.00, 3 seeds) | "
                    f"{(3.0 + 3.5 + 2.5) / 3:.3f} (2.500–3.500, 3 seeds)")


def test_a_check_is_counted_per_seed_and_per_distinct_encoder_with_its_causes(root):
    text, _ = rendered(root, "{{check t,t-relabelled ssl audit}}\n{{check t sup audit}}\n"
                             "{{check t,t-relabelled sup audit}}")
    shared, sup, sup_both = text.splitlines()
    # ssl's 6 records are 3 encoders (t-relabelled trains on t's inputs); each cause counted per record.
    assert shared == ("failed on 6 of 6 records (3 distinct encoders; cause: the critic lagged on 4; "
                      "cause: the estimator cannot bound this term on 2)")
    assert sup == "not measurable on 1 of 3 seeds (1 distinct encoder), held on 2 of 3 seeds (2 distinct encoders)"
    # sup reads labels: its encoders on the two tasks are apart.
    assert sup_both == ("not measurable on 2 of 6 records (2 distinct encoders), "
                        "held on 4 of 6 records (4 distinct encoders)")
    apart, _ = rendered(root, "{{check t,t-relabelled ssl audit}}", EncoderFacts())
    assert apart.startswith("failed on 6 of 6 records (6 distinct encoders;")  # nothing says they share


def test_a_checks_value_is_its_mean_over_seeds_with_min_and_max(root):
    text, _ = rendered(root, "{{checkvalue t ssl audit}}; {{checkvalue t sup audit digits=3}}")
    assert text == f"{sum(AUDIT_VALUES) / 3:.2f} (0.50–4.00, 3 seeds); {0.15:.3f} (0.100–0.200, 2 seeds)"


def test_encoders_name_the_other_cells_that_hold_them(root):
    text, _ = rendered(root, "{{encoders t ssl}}\n{{encoders t sup}}")
    ssl, sup = text.splitlines()
    assert ssl == "3 distinct encoders over 3 seeds; the same 3 on t-relabelled/ssl"
    assert sup == "3 distinct encoders over 3 seeds; no other cell holds any of them"


def test_missing_records_are_said_on_the_page_and_warned_about(root, caplog):
    text, warnings = rendered(root, "a\n{{score t nope}} and {{paired t nope base family=f}}\n{{history t sup loss}}")
    assert text.splitlines()[1:] == ["(no records of nope on t) and (no records of nope on t)",
                                     "(no history of sup on t)"]
    assert warnings == ["pages/P.md:2: {{score t nope}}: no records of nope on t; the page says so",
                        "pages/P.md:2: {{paired t nope base family=f}}: no records of nope on t; the page says so",
                        "pages/P.md:3: {{history t sup loss}}: no history of sup on t; the page says so"]
    with caplog.at_level(logging.WARNING):
        assert publish(root, facts=lambda: FACTS) == []
    assert "pages/P.md:2: {{score t nope}}" in caplog.text


def test_a_page_goes_stale_with_its_template_and_is_regenerated(root):
    (root / "pages" / "P.md").write_text("{{score t ssl}}\n")
    assert publish(root, facts=lambda: FACTS) == []
    assert "{{" not in (root / "P.md").read_text() and "(3)" in (root / "P.md").read_text()
    assert publish(root, check=True, facts=lambda: FACTS) == []
    (root / "pages" / "P.md").write_text("{{score t sup}}\n")
    assert publish(root, check=True, facts=lambda: FACTS) == [str(root / "P.md")]
    assert publish(root, facts=lambda: FACTS) == []
    assert publish(root, check=True, facts=lambda: FACTS) == []


def test_a_generated_page_whose_template_is_gone_is_stale_and_then_removed_and_a_hand_written_one_stays(root):
    (root / "pages" / "P.md").write_text("{{score t ssl}}\n")
    (root / "NOTES.md").write_text("written by hand, no template\n")
    assert publish(root, facts=lambda: FACTS) == []
    (root / "pages" / "P.md").unlink()
    assert publish(root, check=True, facts=lambda: FACTS) == [f"{root / 'P.md'} (its template pages/P.md is gone)"]
    assert publish(root, facts=lambda: FACTS) == []
    assert not (root / "P.md").exists() and (root / "NOTES.md").exists()
    assert publish(root, check=True, facts=lambda: FACTS) == []


def test_the_command_reports_a_stale_page_as_it_reports_a_stale_leaderboard(root, capsys):
    (root / "pages" / "P.md").write_text("{{score t ssl}}\n")
    assert publish(root, facts=lambda: FACTS) == []
    (root / "pages" / "P.md").write_text("{{score t sup}}\n")
    assert main(["leaderboard", "--results", str(root), "--check"]) == 2
    assert f"{root / 'P.md'} out of date with the records" in capsys.readouterr().err


@pytest.mark.parametrize("template, expected", [
    ("ok\n{{scores t ssl}}", "pages/P.md:2: {{scores t ssl}}: unknown kind 'scores'"),
    ("{{score t}}", "pages/P.md:1: {{score t}}: score takes 2 arguments, not 1"),
    ("{{paired t ssl base familly=f}}", "paired takes no option 'familly'"),
    ("{{check t ssl audi}}", "pages/P.md:1: {{check t ssl audi}}: no record of ssl on t has the check 'audi'; "
                             "use one of audit"),
    ("{{history t ssl los}}", "no seed of"),
    ("{{history t ssl loss epoch=3}}", "epoch 3 is not in"),
    ("{{score t ssl", "pages/P.md:1: a `{{` that opens no placeholder"),
    ("{{paired t,t-relabelled,t ssl base}}", "TASKS t,t-relabelled,t has an empty or repeated entry"),
    ("{{check t, ssl audit}}", "TASKS t, has an empty or repeated entry"),
])
def test_a_bad_placeholder_names_page_and_line_and_nothing_is_written(root, template, expected):
    (root / "pages" / "P.md").write_text(template)
    with pytest.raises(HarnessError) as raised:
        publish(root, facts=lambda: FACTS)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in root.iterdir()) == ["history", "pages", "records"]


def test_the_command_stops_a_bad_placeholder_with_one_line_and_exit_2(root, capsys):
    (root / "pages" / "P.md").write_text("{{score t}}")
    assert main(["leaderboard", "--results", str(root)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "pages/P.md:1: {{score t}}" in errors[0] and "Traceback" not in err, err
    assert sorted(p.name for p in root.iterdir()) == ["history", "pages", "records"]


def test_a_template_may_not_take_the_name_of_an_output_the_command_writes(root, capsys):
    (root / "pages" / "LEADERBOARD.md").write_text("x\n")
    assert main(["leaderboard", "--results", str(root)]) == 2
    assert "rename the template" in capsys.readouterr().err
    assert not (root / "LEADERBOARD.md").exists()


def test_without_a_pages_folder_the_outputs_are_as_before(root):
    (root / "pages").rmdir()
    assert publish(root, facts=lambda: FACTS) == []
    assert sorted(p.name for p in root.glob("*.md")) == ["LEADERBOARD.md"]


# Three label assignments of one task; "new" against two controls. On u3 "ctl" lacks seed 2, and on u2 seed 1 of
# "new" trained for other epochs: neither pairs, so the pooled comparison has 3 + 2 + 2 = 7 pairs.
ASSIGNMENTS = {"u1": [0.70, 0.72, 0.71], "u2": [0.60, 0.64, 0.61], "u3": [0.80, 0.79, 0.83]}
NEW_GAIN = {"u1": [0.020, 0.031, 0.012], "u2": [0.041, 0.5, 0.018], "u3": [0.009, 0.026, 0.3]}
OTHER_GAIN = {"u1": [0.010, -0.004, 0.006], "u2": [0.003, 0.011, -0.002], "u3": [0.0, 0.007, 0.002]}


def assignment_record(task, method, seed, acc, epochs=2):
    return make_record(seed=seed, task={"name": task, "version": "1", "suite": "s", "fingerprint": task,
                                        "params": {}},
                       method={"name": method, "display_name": method, "version": "1"},
                       protocol={"epochs": epochs, "trials": 3, "seeds": 1}, metrics={"test_acc": acc})


@pytest.fixture
def assignments(tmp_path):
    for task, base in ASSIGNMENTS.items():
        for seed in range(3):
            if not (task == "u3" and seed == 2):
                write_record(tmp_path, assignment_record(task, "ctl", seed, base[seed]))
            write_record(tmp_path, assignment_record(task, "other", seed, base[seed] + OTHER_GAIN[task][seed]))
            epochs = 3 if (task, seed) == ("u2", 1) else 2
            write_record(tmp_path, assignment_record(task, "new", seed, base[seed] + NEW_GAIN[task][seed], epochs))
    (tmp_path / "pages").mkdir()
    return tmp_path


def pooled_by_hand(control):
    """(new's scores, the control's scores) of the pairs: same task and seed, both with 2 epochs, as written."""
    mine, theirs = [], []
    for task, base in ASSIGNMENTS.items():
        for seed in range(3):
            if (task, seed) == ("u2", 1) or (control == "ctl" and (task, seed) == ("u3", 2)):
                continue
            mine.append(base[seed] + NEW_GAIN[task][seed])
            theirs.append(base[seed] if control == "ctl" else base[seed] + OTHER_GAIN[task][seed])
    return mine, theirs


def test_a_paired_comparison_pools_the_pairs_made_within_each_task_and_is_one_member_of_its_family(assignments):
    text, _ = rendered(assignments, "{{paired u1,u2,u3 new ctl family=a}}\n{{paired u1,u2,u3 new other family=a}}\n"
                                    "{{paired u1,u2,u3 new ctl}}")
    lines = text.splitlines()
    raw = {}
    for control in ("ctl", "other"):
        mine, theirs = pooled_by_hand(control)
        raw[control] = scipy_stats.ttest_rel(mine, theirs).pvalue
    small, large = sorted(raw.values())
    adjusted = {small: min(1.0, 2 * small), large: min(1.0, max(2 * small, large))}  # Holm over the two pooled
    for line, control, pairs in ((lines[0], "ctl", 7), (lines[1], "other", 8)):
        mine, theirs = pooled_by_hand(control)
        assert len(mine) == pairs
        mean, low, high = t_interval([a - b for a, b in zip(mine, theirs)])
        assert line == (f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] points ({pairs} pairs over 3 tasks; "
                        f"p = {adjusted[raw[control]]:.2g}, Holm over 2 comparisons of family a)")
    assert lines[2].endswith(f"(7 pairs over 3 tasks; uncorrected p = {raw['ctl']:.2g})")


def test_a_paired_comparison_over_one_task_is_the_leaderboards_pairing_of_that_task(assignments):
    from harness.results.paired import paired_differences

    results, _ = build(assignments, EncoderFacts())
    for task in ASSIGNMENTS:
        text, _ = rendered(assignments, f"{{{{paired {task} new ctl}}}}")
        row = paired_differences(results[results.task == task], "ctl").set_index("method").loc["new"]
        assert text == (f"{100 * row['mean']:+.2f} [{100 * row.low:+.2f}, {100 * row.high:+.2f}] points "
                        f"({row.n} paired seeds; uncorrected p = {row.p:.2g})")


def test_a_pooled_comparison_needs_pairs_on_every_task_it_names(assignments):
    (assignments / "records" / "u2" / "ctl").rename(assignments / "u2-ctl")
    text, warnings = rendered(assignments, "{{paired u1,u2,u3 new ctl}}")
    assert text == "(no records of ctl on u2)" and len(warnings) == 1
