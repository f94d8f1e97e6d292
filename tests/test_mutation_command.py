"""The mutation-score command's own logic (`python -m tests.mutation`, docs/mutation.md), without running mutmut:
its plans, the verdict from mutmut's exit codes, the exit code and its errors. One system test runs the real
command on a throwaway module."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from harness.api.errors import HarnessError
from tests.mutation import run
from tests.mutation.__main__ import main
from tests.mutation.plan import ROOT, Module, read_plan, select
from tests.mutation.score import exit_code, score, table

PLAN = '''module = "pkg/calc.py"
tests = ["tests/test_calc.py"]

[[equivalent]]
mutant = "pkg.calc.x_add__mutmut_2"
reason = "the same sum"
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one module, its test file and its plan."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (tmp_path / "tests" / "mutation").mkdir(parents=True)
    (tmp_path / "tests" / "test_calc.py").write_text("from pkg.calc import add\n")
    (tmp_path / "tests" / "mutation" / "pkg.calc.toml").write_text(PLAN)
    return tmp_path


def write_plan(repo: Path, text: str) -> Path:
    toml = repo / "tests" / "mutation" / "pkg.calc.toml"
    toml.write_text(text)
    return toml


# -- the plans -------------------------------------------------------------------------------------------------

def test_a_plan_names_its_module_its_tests_and_its_equivalent_mutants(repo):
    plan = read_plan(repo / "tests" / "mutation" / "pkg.calc.toml", repo)
    assert plan == Module("pkg/calc.py", ("tests/test_calc.py",), {"pkg.calc.x_add__mutmut_2": "the same sum"})
    assert plan.dotted == "pkg.calc"


def test_a_module_is_selected_by_dotted_name_or_path_and_all_by_default(repo):
    (repo / "pkg" / "other.py").write_text("")
    write_plan(repo, PLAN)
    other = 'module = "pkg/other.py"\ntests = ["tests/test_calc.py"]\n'
    (repo / "tests" / "mutation" / "pkg.other.toml").write_text(other)
    assert [m.path for m in select([], repo)] == ["pkg/calc.py", "pkg/other.py"]
    assert select(["pkg.calc"], repo) == select(["pkg/calc.py"], repo) == select(["./pkg/calc.py"], repo)
    with pytest.raises(HarnessError, match="no mutation plan for pkg.missing .*with one: pkg.calc, pkg.other$"):
        select(["pkg.missing"], repo)


@pytest.mark.parametrize("text, problem", [
    ("module = [", "is not valid TOML"),
    ("extra = 1\n" + PLAN, "unknown key.* extra"),
    ('tests = ["tests/test_calc.py"]\n', "module must be the path"),
    ('module = "pkg/other.py"\ntests = ["tests/test_calc.py"]\n', "rename the file pkg.other.toml"),
    ('module = "pkg/calc.py"\ntests = []\n', "tests must be a non-empty list"),
    ('module = "pkg/calc.py"\ntests = ["tests/test_gone.py"]\n', "tests/test_gone.py do not exist"),
    (PLAN.replace('reason = "the same sum"', 'reason = " "'), "needs a reason"),
    (PLAN.replace('reason = "the same sum"\n', ""), "exactly mutant and reason"),
    (PLAN.replace("pkg.calc.x_add", "pkg.other.x_add"), "is not one of pkg.calc's"),
    (PLAN + PLAN.split("\n\n")[1], "listed twice"),
])
def test_a_bad_plan_is_refused_in_one_line_naming_the_problem(repo, text, problem):
    write_plan(repo, text)
    with pytest.raises(HarnessError, match=problem) as refused:
        select([], repo)
    assert "\n" not in str(refused.value)


def test_a_plan_whose_module_is_gone_is_refused(repo):
    (repo / "pkg" / "calc.py").unlink()
    with pytest.raises(HarnessError, match="module pkg/calc.py does not exist"):
        select([], repo)


def test_the_shipped_plans_are_valid_and_name_only_their_own_modules_mutants():
    plans = select([], ROOT)
    assert plans
    for plan in plans:
        assert all(name.startswith(plan.dotted + ".x") for name in plan.equivalent), plan.path


# -- the verdict ----------------------------------------------------------------------------------------------

MODULE = Module("pkg/calc.py", ("tests/test_calc.py",),
                {"pkg.calc.x_f__mutmut_2": "why", "pkg.calc.x_f__mutmut_3": "why", "pkg.calc.x_f__mutmut_9": "why"})


def test_outcomes_are_sorted_into_killed_explained_unexplained_stale_and_unsettled():
    codes = {
        "pkg.calc.x_f__mutmut_1": 1,  # a test failed
        "pkg.calc.x_f__mutmut_2": 0,  # survived, listed: explained
        "pkg.calc.x_f__mutmut_3": 1,  # killed but listed: stale
        "pkg.calc.x_f__mutmut_4": 36,  # timed out: killed
        "pkg.calc.x_f__mutmut_10": 0,  # survived, not listed
        "pkg.calc.x_g__mutmut_1": 33,  # no test reaches it: a survivor too
        "pkg.calc.x_g__mutmut_2": None,  # never run
        "pkg.calc.x_g__mutmut_3": -11,  # segfault
    }
    result = score(MODULE, codes)
    assert (result.mutants, result.killed, result.equivalent) == (8, 3, 1)
    assert result.survivors == ["pkg.calc.x_f__mutmut_10", "pkg.calc.x_g__mutmut_1"]
    assert result.stale == ["pkg.calc.x_f__mutmut_3 (killed)", "pkg.calc.x_f__mutmut_9 (no such mutant)"]
    assert result.unsettled == ["pkg.calc.x_g__mutmut_2 (exit code None)", "pkg.calc.x_g__mutmut_3 (exit code -11)"]
    assert not result.ok and exit_code([result]) == 1


def test_only_a_module_whose_every_survivor_is_explained_passes():
    explained = Module("pkg/calc.py", ("tests/test_calc.py",), {"pkg.calc.x_f__mutmut_2": "why"})
    result = score(explained, {"pkg.calc.x_f__mutmut_1": 3, "pkg.calc.x_f__mutmut_2": 0, "pkg.calc.x_f__mutmut_3": 255})
    assert result.ok and (result.mutants, result.killed, result.equivalent) == (3, 2, 1)
    assert exit_code([result]) == 0
    for problem in ({"pkg.calc.x_f__mutmut_4": 0}, {"pkg.calc.x_f__mutmut_4": 5}, {"pkg.calc.x_f__mutmut_4": 35}):
        assert exit_code([result, score(explained, {"pkg.calc.x_f__mutmut_2": 0} | problem)]) == 1
    assert exit_code([result, score(explained, {"pkg.calc.x_f__mutmut_2": 1})]) == 1  # its entry is stale


def test_the_table_has_a_row_per_module_and_a_line_per_problem():
    result = score(MODULE, {"pkg.calc.x_f__mutmut_1": 1, "pkg.calc.x_f__mutmut_2": 0, "pkg.calc.x_f__mutmut_3": 0,
                            "pkg.calc.x_f__mutmut_9": 0, "pkg.calc.x_f__mutmut_10": 0})
    lines = table([result]).splitlines()
    assert lines[0].split("|")[1:-1] == [" module      ", "   mutants ", "   killed ", "   equivalent ",
                                         "   survivors ", "   stale ", " score   "]
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]] == ["pkg/calc.py", "5", "1", "3", "1", "0", "20.0%"]
    assert lines[3:] == ["pkg/calc.py: unexplained survivor: pkg.calc.x_f__mutmut_10"]


# -- the command ----------------------------------------------------------------------------------------------

def test_a_bad_module_name_or_plan_ends_in_one_line_and_exit_code_2(repo, capsys):
    assert main(["pkg.nothing", "--root", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no mutation plan for pkg.nothing") and err.count("\n") == 1
    write_plan(repo, "module = [")
    assert main(["--root", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "pkg.calc.toml is not valid TOML" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["--max-children", "0", "--root", str(repo)]) == 2
    assert "--max-children 0: give at least 1" in capsys.readouterr().err


def raise_not_found(name):
    raise metadata.PackageNotFoundError(name)


@pytest.mark.parametrize("version, said", [
    (raise_not_found, "mutmut is not installed"),
    (lambda name: "3.9.0", "mutmut 3.9.0 is installed, but the plans name mutmut 3.8.1's mutants"),
])
def test_without_the_pinned_mutmut_the_command_says_how_to_install_it(repo, capsys, monkeypatch, version, said):
    monkeypatch.setattr(run.metadata, "version", version)
    assert main(["--root", str(repo)]) == 2
    err = capsys.readouterr().err
    assert said in err and 'pip install -e ".[mutation]"' in err and err.count("\n") == 1
    assert not (repo / "mutants").exists()


def test_the_scratch_copy_holds_what_git_would_commit_and_mutmut_settings_for_one_module(repo, tmp_path_factory):
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_text("x")
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.mutmut]\nsource_paths = ["old"]\n\n'
                                         '[tool.pytest.ini_options]\naddopts = "-q"\n')
    scratch = tmp_path_factory.mktemp("scratch")
    tops = run.copy_tree(repo, scratch)
    assert tops == [".gitignore", "pkg", "pyproject.toml", "tests"] and not (scratch / "ignored").exists()
    assert (scratch / "pkg" / "calc.py").read_text() == (repo / "pkg" / "calc.py").read_text()
    run.configure(scratch, select([], repo)[0], tops)
    settings = tomllib.loads((scratch / "pyproject.toml").read_text())
    assert settings["tool"]["mutmut"] == {
        "source_paths": ["pkg"], "only_mutate": ["pkg/calc.py"], "also_copy": [".gitignore", "pyproject.toml", "tests"],
        "pytest_add_cli_args_test_selection": ["tests/test_calc.py"], "use_git_change_detection": False}
    assert settings["tool"]["pytest"] == {"ini_options": {"addopts": "-q"}} and settings["project"] == {"name": "x"}


def test_outside_a_git_checkout_the_command_says_so(repo):
    with pytest.raises(HarnessError, match="is not a git checkout"):
        run.copy_tree(repo / "pkg", repo)


# -- the real thing ---------------------------------------------------------------------------------------------

@pytest.mark.system
def test_the_command_runs_mutmut_on_a_throwaway_module_and_reports_every_kind_of_outcome(tmp_path):
    """pkg/calc.py has three mutants: add's a - b (killed by the test), unused's a / 2 and a * 3 (no test reaches
    them). The plan lists a / 2 as equivalent and add's killed mutant, which is then stale. About 10 s."""
    pytest.importorskip("mutmut")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "calc.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef unused(a):\n    return a * 2\n")
    (tmp_path / "tests" / "mutation").mkdir(parents=True)
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "tests" / "test_calc.py").write_text(
        "from pkg.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (tmp_path / "tests" / "mutation" / "pkg.calc.toml").write_text(
        'module = "pkg/calc.py"\ntests = ["tests/test_calc.py"]\n\n'
        '[[equivalent]]\nmutant = "pkg.calc.x_unused__mutmut_1"\nreason = "listed: explained"\n\n'
        '[[equivalent]]\nmutant = "pkg.calc.x_add__mutmut_1"\nreason = "killed: stale"\n')
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".git" not in p.parts)

    done = subprocess.run([sys.executable, "-m", "tests.mutation", "--root", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    row = next(line for line in lines if line.startswith("| pkg/calc.py"))
    assert [cell.strip() for cell in row.split("|")[1:-1]] == ["pkg/calc.py", "3", "1", "1", "1", "1", "33.3%"]
    assert "pkg/calc.py: unexplained survivor: pkg.calc.x_unused__mutmut_2" in lines
    assert "pkg/calc.py: stale equivalent entry: pkg.calc.x_add__mutmut_1 (killed)" in lines
    assert "+    return a * 3" in done.stdout  # the unexplained survivor's diff
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if ".git" not in p.parts) == before
