"""Evidence counted once (issue 38, item 5): a record names its trained encoder, the leaderboard says which of its
cells share encoders and counts checks per distinct encoder, and its paired tables quote Holm-corrected p values."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from scipy import stats as scipy_stats

from harness.api.catalog import METHODS, TASKS
from harness.cli.encoder_facts import encoder_facts
from harness.results import stats
from harness.results.encoders import EncoderFacts, encoder_digest, encoder_of, facts_of
from harness.results.leaderboard import build, render
from harness.results.paired import paired_differences
from harness.results.publishing.site import publish
from harness.results.records import read_records, record_path, write_record
from tests.test_records import make_record

# "ssl" and the baseline "base" never read labels, "sup" does; "t-relabelled" trains on t's inputs and views.
FACTS = EncoderFacts(reads_labels={"ssl": False, "base": False, "sup": True}, inputs_of={"t-relabelled": "t"})
FAILED = {"audit": {"held": False, "measurable": True, "value": 1.0, "detail": "above its bound"}}
HELD = {"audit": {"held": True, "measurable": True, "value": 0.0, "detail": ""}}
# Each row's score minus the baseline's, per task and seed (fractions): chosen so that Holm changes every p.
GAPS = {("ssl", "t"): [0.030, 0.034, 0.031], ("ssl", "t-relabelled"): [0.010, 0.030, 0.005],
        ("sup", "t"): [0.050, 0.052, 0.049], ("sup", "t-relabelled"): [0.020, -0.010, 0.015]}


def record(task, method, seed, acc, checks=None):
    return make_record(seed=seed, task={"name": task, "version": "1", "suite": "s", "fingerprint": task, "params": {}},
                       method={"name": method, "display_name": method.upper(), "version": "1"},
                       metrics={"test_acc": acc}, checks=checks or {}, finished_at="2026-12-07T01:00:00+00:00")


def write_two_tasks(root):
    """Three seeds of base, ssl and sup on t and t-relabelled: 18 records of 3 + 3 + 6 = 12 encoders."""
    for task in ("t", "t-relabelled"):
        for seed in range(3):
            base = 0.6 + 0.01 * seed + (0.1 if task == "t" else 0.0)  # seed noise every row shares, and the label
            write_record(root, record(task, "base", seed, base))
            write_record(root, record(task, "ssl", seed, base + GAPS["ssl", task][seed], FAILED))
            write_record(root, record(task, "sup", seed, base + GAPS["sup", task][seed], FAILED if seed else HELD))


def by_cell(root):
    return {(r.task["name"], r.method["name"], r.seed): r for r in read_records(root)}


def test_a_method_that_never_reads_labels_names_one_encoder_on_tasks_that_share_inputs(tmp_path):
    write_two_tasks(tmp_path)
    found = by_cell(tmp_path)
    assert encoder_of(found["t", "ssl", 0], FACTS) == encoder_of(found["t-relabelled", "ssl", 0], FACTS)
    assert encoder_of(found["t", "ssl", 0], FACTS) != encoder_of(found["t", "ssl", 1], FACTS)  # another seed
    assert encoder_of(found["t", "sup", 0], FACTS) != encoder_of(found["t-relabelled", "sup", 0], FACTS)
    # Without the facts nothing says the inputs are shared: each record's encoder counts apart.
    assert encoder_of(found["t", "ssl", 0], EncoderFacts()) != encoder_of(found["t-relabelled", "ssl", 0],
                                                                          EncoderFacts())
    # What a record names when it was trained stands, whatever the facts read later say.
    named = record("t", "ssl", 0, 0.7)
    named.encoder = "0123456789ab"
    assert encoder_of(named, FACTS) == "0123456789ab"


def test_a_record_of_schema_2_is_read_and_its_encoder_computed(tmp_path):
    """The published records predate the field: they read as before, and readers compute their encoder."""
    path = record_path(tmp_path, "t-relabelled", "ssl", 0)
    data = asdict(record("t-relabelled", "ssl", 0, 0.7))
    del data["encoder"]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data | {"schema": 2}))
    (old,) = read_records(tmp_path)
    assert old.encoder == "" and encoder_of(old, FACTS) == encoder_digest(record("t", "ssl", 0, 0.6), FACTS)


def test_a_run_stores_the_digest_its_readers_compute(harness_run):
    assert harness_run("--method", "clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1") == 0
    (made,) = read_records(harness_run.results)
    assert len(made.encoder) == 12 and made.encoder == encoder_digest(made, encoder_facts())
    # A run reads the facts from its method and task as the index does for readers.
    simclr, shared = METHODS.get("simclr"), TASKS.get("synthetic-shared")()
    assert facts_of(simclr, shared) == EncoderFacts({"simclr": False}, {"synthetic-shared": "synthetic"})
    index = encoder_facts()
    assert index.reads_labels["simclr"] is False and index.inputs_of["synthetic-shared"] == "synthetic"


def note(text, start):
    return next((line for line in text.splitlines() if line.startswith(start)), None)


def test_the_leaderboard_names_the_cells_that_share_encoders_and_counts_checks_per_encoder(tmp_path):
    write_two_tasks(tmp_path)
    text = render(tmp_path, facts=FACTS)
    shared = note(text, "Note: shared encoders: ")
    assert shared is not None and "BASE: the same 3 encoders on t and t-relabelled" in shared
    assert "SSL: the same 3 encoders on t and t-relabelled" in shared and "SUP" not in shared
    assert "This table's 18 records hold 12 distinct encoders." in shared
    # ssl's 3 encoders failed on all 6 records; sup's 6 encoders failed on seeds 1 and 2 of each task.
    assert note(text, "Note: ⚠ counted once per encoder: ") == (
        "Note: ⚠ counted once per encoder: a check failed on 7 of the 9 distinct encoders whose records carry "
        "checks (10 of 12 records; an encoder counts as failed where any of its records failed).")
    # Without the facts every record is an encoder of its own: nothing is shared, and ⚠ counts encoders already.
    apart = render(tmp_path)
    assert note(apart, "Note: shared encoders") is None and note(apart, "Note: ⚠ counted") is None


def test_the_web_page_says_in_a_rows_details_whose_encoders_it_probes(tmp_path):
    write_two_tasks(tmp_path)
    assert publish(tmp_path, facts=lambda: FACTS) == []
    page = (tmp_path / "index.html").read_text()
    ssl = page[page.index('<details id="row-s--SSL">'):]
    ssl = ssl[:ssl.index("</details>")]
    assert ssl.count("Encoders: the same 3 as on t, probed here with this task's labels") == 1
    sup = page[page.index('<details id="row-s--SUP">'):]
    assert "Encoders:" not in sup[:sup.index("</details>")]


def test_a_paired_tables_p_values_are_holm_corrected_over_the_table(tmp_path):
    write_two_tasks(tmp_path)
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "sources.toml").write_text('[paired]\ns = "BASE"\n')
    results, _ = build(tmp_path, FACTS)
    table = paired_differences(results, "BASE").set_index(["method", "task"])
    # By hand: scipy's paired t-test per cell, then Holm over the table's m = 4 cells: the k-th smallest p times
    # (m - k + 1), never below the one before it, at most 1.
    raw = {}
    for (method, task), gaps in GAPS.items():
        base = [0.6 + 0.01 * seed + (0.1 if task == "t" else 0.0) for seed in range(3)]
        raw[method.upper(), task] = scipy_stats.ttest_rel([b + g for b, g in zip(base, gaps)], base).pvalue
    expected, floor = {}, 0.0
    for k, cell in enumerate(sorted(raw, key=raw.get)):
        floor = max(floor, (len(raw) - k) * raw[cell])
        expected[cell] = min(1.0, floor)
    for cell, p in expected.items():
        # scipy and stats.paired_test compute one t statistic from the same three floats: agreement to float64
        # rounding, which rel=1e-9 bounds with room to spare; Holm's products add an ulp each.
        assert table.loc[cell, "p"] == pytest.approx(raw[cell], rel=1e-9)
        assert table.loc[cell, "holm_p"] == pytest.approx(p, rel=1e-9)
    assert sum(expected[c] != pytest.approx(raw[c], rel=1e-3) for c in raw) == 3  # the largest p may stand as is
    text = render(tmp_path, facts=FACTS)
    assert "Holm-corrected over this table's 4 tested comparisons (one family)" in text
    # BASE's and SSL's cells on t and t-relabelled share encoders; the sentence is said once, as written.
    assert text.count(" A row's cells on tasks that share its trained encoders (the note above) are not independent "
                      "replications: ") == 1
    row = next(line for line in text.splitlines() if line.startswith("| SSL ") and "p = " in line)
    assert f"p = {expected['SSL', 't']:.2g}" in row and f"p = {expected['SSL', 't-relabelled']:.2g}" in row


def test_rows_the_uncorrected_test_separates_from_the_best_are_tied_after_holm(tmp_path):
    """The ≈ ties are Holm-corrected over the task's rows: two rows at raw p < 0.05 each are tied after it."""
    best = [0.90, 0.92, 0.91]
    rows = {"best": best, "near": [b - g for b, g in zip(best, [0.010, 0.014, 0.020])],
            "nearer": [b - g for b, g in zip(best, [0.010, 0.015, 0.021])]}
    for method, scores in rows.items():
        for seed, score in enumerate(scores):
            write_record(tmp_path, record("t", method, seed, score))
    raw = [scipy_stats.ttest_rel(best, rows[name]).pvalue for name in ("near", "nearer")]
    assert max(raw) < stats.ALPHA <= min(stats.holm(raw))  # the case this test is about
    lines = render(tmp_path).splitlines()
    assert all("≈" in next(line for line in lines if line.startswith(f"| {name} ")) for name in ("NEAR", "NEARER"))


def test_the_mi_page_says_which_diagnosis_measured_an_encoder_already_measured(tmp_path):
    from harness.results.diagnostics import MIRow, render_table, write_result

    write_two_tasks(tmp_path)
    for task in ("t", "t-relabelled"):
        for method in ("ssl", "sup"):
            protocol = {"epochs": 2, "seed": 0, "hparams_from": f"records/{task}/{method}/seed0.json"}
            write_result(tmp_path, task, {"name": method, "display_name": method.upper(), "version": "1"}, protocol,
                         [MIRow("Z", "w", 1.0)], {})
    text = render_table(tmp_path, facts=FACTS)
    assert "4 diagnosed (task, method) pairs of 3 distinct trained encoders." in text
    sections = dict(part.split("\n", 1) for part in text.split("## ")[1:])
    assert sections["t-relabelled / SSL"].startswith("\nThe same trained encoder as t / SSL ")
    assert "The same trained encoder" not in sections["t-relabelled / SUP"] + sections["t / SSL"]
    assert "distinct" not in render_table(tmp_path)  # without the facts, each diagnosis is an encoder of its own
