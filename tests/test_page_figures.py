"""The `curve` placeholder of analysis pages (harness.results.publishing.curves): its points are recomputed here from
the records the tests write, its figure is written by `harness leaderboard` and goes stale with them."""

from __future__ import annotations

import json

import pytest

from harness.api.errors import HarnessError
from harness.cli import main
from harness.results.encoders import EncoderFacts
from harness.results.leaderboard import build
from harness.results.publishing.curves import DIGITS
from harness.results.publishing.figures import committed_digest
from harness.results.publishing.pages import render_pages
from harness.results.publishing.site import publish
from harness.results.records import record_path, write_record
from tests.test_pages import t_interval
from tests.test_records import make_record

RATES = {"w0": 0.0, "w32": 0.32, "w63": 0.63, "w95": 0.95}  # task -> its parameter setting.rate
SCORE = {"new": [0.30, 0.34, 0.35], "ctl": [0.31, 0.29, 0.33], "image": [0.36, 0.30, 0.32]}  # at rate 0
SLOPE = {"new": 0.40, "ctl": 0.02, "image": 0.05}  # what each method gains per unit of rate
GUIDE = [0.9, 1.0, 1.3]  # new's check value is the rate times these, per seed
TEMPLATE = "Dose:\n{{curve w63,w0,w95,w32 new,ctl,image setting.rate check=guide}}\n"
FACTS = EncoderFacts()
TOLERANCE = 0.5 * 10 ** -DIGITS + 1e-9  # the figure's data keeps DIGITS decimals (and the floats' own error)


def score(method, task, seed):
    return SCORE[method][seed] + SLOPE[method] * RATES[task]


def record(task, method, seed, acc, rate=None, checks=None):
    params = {"setting": {"rate": RATES[task] if rate is None else rate, "size": 8}}
    return make_record(seed=seed, task={"name": task, "version": "3", "suite": "s", "fingerprint": task,
                                        "params": params, "main_score": "heldout_acc"},
                       method={"name": method, "display_name": method, "version": "1"},
                       metrics={"heldout_acc": acc, "test_acc": 0.5}, checks=checks or {})


def guide(task, seed):
    return {"guide": {"held": True, "measurable": True, "value": RATES[task] * GUIDE[seed], "detail": ""}}


@pytest.fixture
def root(tmp_path):
    for task in RATES:
        for seed in range(3):
            write_record(tmp_path, record(task, "new", seed, score("new", task, seed), checks=guide(task, seed)))
            write_record(tmp_path, record(task, "ctl", seed, score("ctl", task, seed)))
            if task != "w63":  # image has no records on w63: its point there is absent
                write_record(tmp_path, record(task, "image", seed, score("image", task, seed)))
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "P.md").write_text(TEMPLATE)
    return tmp_path


def rendered(root):
    results, tables = build(root, FACTS)
    pages, warnings, figures = render_pages(root, results, tables, FACTS, set())
    return pages["P.md"].split("\n\n", 1)[1], warnings, figures


def test_a_curves_points_are_each_methods_main_score_against_the_parameter_in_x_order(root):
    _, warnings, (figure,) = rendered(root)
    assert list(figure.data["points"]) == ["new", "ctl", "image"]
    for method, points in figure.data["points"].items():
        tasks = sorted(t for t in RATES if not (method == "image" and t == "w63"))  # w0 < w32 < w63 < w95
        assert [p["task"] for p in points] == tasks and [p["x"] for p in points] == [RATES[t] for t in tasks]
        for point in points:
            mean, low, high = t_interval([100 * score(method, point["task"], seed) for seed in range(3)])
            assert point["n"] == 3
            assert point["mean"] == pytest.approx(mean, abs=TOLERANCE)
            assert point["low"] == pytest.approx(low, abs=TOLERANCE)
            assert point["high"] == pytest.approx(high, abs=TOLERANCE)
    assert figure.data["score"] == "heldout_acc" and figure.data["param"] == "setting.rate"
    assert warnings == ["pages/P.md:2: {{curve w63,w0,w95,w32 new,ctl,image setting.rate check=guide}}: no records "
                        "of image on w63; the figure leaves that point out"]


def test_a_curves_check_panel_shows_the_checks_value_of_the_methods_that_record_it(root):
    _, _, (figure,) = rendered(root)
    assert figure.data["check"] == "guide" and list(figure.data["checked"]) == ["new"]
    points = figure.data["checked"]["new"]
    assert [p["x"] for p in points] == sorted(RATES.values())
    for point in points:
        values = [RATES[point["task"]] * g for g in GUIDE]
        assert point["n"] == 3
        assert point["mean"] == pytest.approx(sum(values) / 3, abs=TOLERANCE)
        assert (point["min"], point["max"]) == (pytest.approx(min(values), abs=TOLERANCE),
                                                pytest.approx(max(values), abs=TOLERANCE))


def test_the_page_links_the_figure_with_its_caption_and_the_command_writes_it_and_finds_it_stale(root, capsys):
    text, _, (figure,) = rendered(root)
    assert figure.path.startswith("figures/pages/P/curve-setting.rate-") and figure.path.endswith(".svg")
    assert text == f"Dose:\n![heldout_acc against setting.rate]({figure.path})\n\n*{figure.caption}*\n"
    assert "no records of image on w63" in figure.caption and "guide" in figure.caption
    assert publish(root, facts=lambda: FACTS) == []
    assert committed_digest(root / figure.path) == figure.digest
    assert publish(root, check=True, facts=lambda: FACTS) == []  # written once, not deleted as a stray figure
    assert rendered(root)[2][0].path == figure.path  # the name does not change from one run to the next
    changed = record("w32", "ctl", 1, score("ctl", "w32", 1) + 0.01)
    write_record(root, changed)
    assert main(["leaderboard", "--results", str(root), "--check"]) == 2
    err = capsys.readouterr().err
    assert str(root / figure.path) in err and "out of date with the records" in err
    assert publish(root, facts=lambda: FACTS) == []
    assert publish(root, check=True, facts=lambda: FACTS) == []
    (root / "pages" / "P.md").write_text("no figure\n")
    assert f"{root / figure.path} (no longer drawn)" in publish(root, check=True, facts=lambda: FACTS)


def test_no_records_of_any_method_say_so_instead_of_a_figure(root):
    (root / "pages" / "P.md").write_text("{{curve w0,w32 nope,none setting.rate}}\n")
    text, warnings, figures = rendered(root)
    assert text == "(no records of nope,none on w0,w32)\n" and figures == [] and len(warnings) == 1


def rewrite_params(root, task, method, seed, params):
    path = record_path(root, task, method, seed)
    found = json.loads(path.read_text())
    found["task"]["params"] = params
    path.write_text(json.dumps(found))


def rescore(root, task, main_score):
    for path in (root / "records" / task).rglob("*.json"):
        found = json.loads(path.read_text())
        found["task"]["main_score"] = main_score
        path.write_text(json.dumps(found))


@pytest.mark.parametrize("change, template, expected", [
    (lambda root: rewrite_params(root, "w32", "ctl", 2, {"setting": {"size": 8}}), TEMPLATE,
     "pages/P.md:2: {{curve w63,w0,w95,w32 new,ctl,image setting.rate check=guide}}: the record of ctl seed 2 on "
     "w32 has no task parameter 'setting.rate' (it has: setting.size)"),
    (lambda root: rewrite_params(root, "w32", "image", 0, {"setting": {"rate": 0.5, "size": 8}}), TEMPLATE,
     "the records of w32 disagree on setting.rate: 0.32 (ctl seed 0, ctl seed 1, ctl seed 2, image seed 1, "
     "image seed 2, new seed 0, new seed 1, new seed 2); 0.5 (image seed 0)"),
    (lambda root: rewrite_params(root, "w0", "new", 0, {"setting": {"rate": "none", "size": 8}}), TEMPLATE,
     "the task parameter setting.rate of w0 is 'none', not a number"),
    (None, "{{curve w0,w32 new setting.rate setting}}", "curve takes 3 arguments, not 4"),
    (None, "{{curve w0,w32 new}}", "pages/P.md:1: {{curve w0,w32 new}}: curve takes 3 arguments, not 2"),
    (None, "{{curve w0,w32 new setting.rate chek=guide}}", "curve takes no option 'chek'"),
    (None, "{{curve w0,w32 new,ctl setting.rate check=guid}}", "has the check 'guid'; use one of guide"),
    (None, "{{curve w0,w32 new,new setting.rate}}", "METHODS new,new has an empty or repeated entry"),
    (None, "{{curve w0,w32 new setting}}", "the task parameter setting of w0 is {"),
    (lambda root: rescore(root, "w0", "test_acc"), "{{curve w0,w32 new setting.rate}}",
     "the tasks' main scores differ (heldout_acc, test_acc)"),
])
def test_a_bad_curve_names_page_and_line_and_nothing_is_written(root, change, template, expected):
    if change:
        change(root)
    (root / "pages" / "P.md").write_text(template)
    with pytest.raises(HarnessError) as raised:
        publish(root, facts=lambda: FACTS)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in root.iterdir()) == ["pages", "records"]


def test_the_same_curve_twice_on_a_page_is_one_figure(root):
    (root / "pages" / "P.md").write_text(TEMPLATE + TEMPLATE)
    text, _, figures = rendered(root)
    assert len(figures) == 1 and text.count(figures[0].path) == 2


def test_a_point_of_one_seed_has_no_interval_and_is_drawn_without_a_bar(root):
    for seed in (1, 2):
        record_path(root, "w0", "ctl", seed).unlink()
    _, _, (figure,) = rendered(root)
    (point, *_) = figure.data["points"]["ctl"]
    assert point == {"task": "w0", "x": 0.0, "n": 1, "mean": pytest.approx(100 * score("ctl", "w0", 0), abs=TOLERANCE),
                     "low": None, "high": None}
    assert publish(root, facts=lambda: FACTS) == [] and committed_digest(root / figure.path) == figure.digest
