import pytest

from harness.api.errors import HarnessError
from harness.api.space import Choice, Float, Int, parse_overrides, typed_overrides

SPACE = {"lr": Float(1e-4, 1e-2, log=True), "depth": Int(1, 3), "dim": Choice((64, 128))}


@pytest.mark.parametrize("bad", ["lr", "=3", "lr=", "lr 0.1"])
def test_malformed_override_is_rejected_with_the_expected_form(bad):
    with pytest.raises(HarnessError, match="write it as key=value"):
        parse_overrides([bad])


def test_overrides_are_typed_by_their_parameter():
    typed = typed_overrides(parse_overrides(["lr=0.01", "depth=2", "dim=128", "batch_size=32"]), SPACE,
                            {"batch_size": 256})
    assert typed == {"lr": 0.01, "depth": 2, "dim": 128, "batch_size": 32}
    assert isinstance(typed["depth"], int)


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(HarnessError, match="no such hyperparameter; known ones are batch_size, depth, dim, lr"):
        typed_overrides({"learning_rate": "1"}, SPACE, {"batch_size": 256})


@pytest.mark.parametrize("pair", ["depth=two", "lr=fast", "lr=nan"])
def test_value_of_the_wrong_type_is_rejected(pair):
    with pytest.raises(HarnessError, match="--set"):
        typed_overrides(parse_overrides([pair]), SPACE, {})


# -- domains: every value a hyperparameter may take, checked before any work -------------------------

from harness.api.catalog import METHODS  # noqa: E402
from harness.api.space import NON_NEGATIVE, POSITIVE, SIZE, Interval, OneOf, check_domains  # noqa: E402
from harness.running.pair import Pair, resolve_hyperparameters  # noqa: E402
from harness.running.request import TRAIN_DOMAINS  # noqa: E402
from tests.fixtures import TinySynthetic  # noqa: E402


@pytest.mark.parametrize("domain, inside, outside", [
    (POSITIVE, [1e-9, 3.0], [0, -1e-3, float("inf"), True, "0.1", None]),
    (NON_NEGATIVE, [0, 1e-5], [-1e-12]),
    (SIZE, [1, 64, 128.0], [0, -3, 1.5, False]),
    (Interval(low=0, high=1, high_open=True, optional=True), [0, 0.5, None], [1, 1.0, -0.1]),
    (OneOf(("clip",), prefixes=("module:",)), ["clip", "module:pkg.mod:f"], ["clap", "module:", 1]),
])
def test_a_domain_holds_what_it_says_and_nothing_else(domain, inside, outside):
    assert all(domain.contains(v) for v in inside)
    assert not any(domain.contains(v) for v in outside)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_domain_that_holds_its_defaults_and_its_search_space(name):
    method = METHODS.get(name)
    # Our own methods declare every domain; inference (below) is for plugins written before domains existed.
    assert set(method.search_space) | set(method.defaults) <= set(TRAIN_DOMAINS | method.domains)
    resolve_hyperparameters(Pair(TinySynthetic(), method), {})  # raises on any stray value


@pytest.mark.parametrize("pair, expected", [
    ("lr=-1", "--set lr=-1.0: lr must be a number > 0; pass one, for example --set lr=0.001"),
    ("weight_decay=-0.5", "weight_decay must be a number >= 0"),
    ("embed_dim=0", "--set embed_dim=0: embed_dim must be a whole number >= 1; pass one, for example "
                    "--set embed_dim=128"),
    ("embed_dim=1.5", "embed_dim must be a whole number >= 1"),
    ("batch_size=0", "batch_size must be a whole number >= 2"),
    ("init_temperature=0", "init_temperature must be a number > 0"),
])
def test_a_value_outside_its_domain_names_the_key_the_value_the_range_and_the_fix(pair, expected):
    with pytest.raises(HarnessError) as caught:
        resolve_hyperparameters(Pair(TinySynthetic(), METHODS.get("clip")), parse_overrides([pair]))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_choice_outside_its_options_is_refused_with_the_options():
    method = METHODS.get("clip-guided-simclr")
    with pytest.raises(HarnessError, match="variant must be one of add-new-positive, drop-false-negative"):
        check_domains("m", {}, method.defaults, {"variant": "drop-everything"}, TRAIN_DOMAINS | method.domains)
    with pytest.raises(HarnessError, match=r"fraction must be a number in \[0, 1\), or None"):
        check_domains("m", {}, method.defaults, {"fraction": 1.0}, TRAIN_DOMAINS | method.domains)


def test_a_method_whose_declarations_leave_their_domain_is_named():
    with pytest.raises(HarnessError, match="method m: default lr=-0.1 is outside its domain"):
        check_domains("method m", {}, {"lr": -0.1}, {}, {"lr": POSITIVE})
    with pytest.raises(HarnessError, match="the search space lr=Float.* leaves its domain"):
        check_domains("method m", {"lr": Float(0.0, 1.0)}, {}, {}, {"lr": POSITIVE})


# -- a key without a declared domain (a plugin written before 0.2.0) gets one inferred, with a warning --

@pytest.mark.parametrize("default, param, domain", [
    (32, None, SIZE),  # a whole number >= 1: a size
    (0, None, Interval(low=0, integer=True)),
    (-2, None, Interval(integer=True)),
    (0.2, Float(0.05, 0.5), POSITIVE),  # the xplug-align margin
    (0.1, Float(0.0, 0.5), NON_NEGATIVE),  # a range that reaches 0 admits 0
    (0.0, Float(-1.0, 1.0), Interval()),  # a signed range: any finite number
    (2, Int(1, 4), SIZE),
    (1, Float(0.5, 2.0), POSITIVE),  # a whole default of a real range stays real
    (None, Float(1e-3, 1.0), Interval(low=0, low_open=True, optional=True)),
    (64, Choice((64, 128)), SIZE),
    (True, None, OneOf((True, False))),
    ("mean", Choice(("mean", "max")), OneOf(("mean", "max", "mean"))),
    ("relu", None, OneOf(prefixes=("",))),
])
def test_a_key_without_a_domain_gets_one_from_its_default_and_range(default, param, domain):
    from harness.api.space import infer_domain
    assert infer_domain(default, param) == domain


def test_an_inferred_domain_still_refuses_what_falls_outside_it_and_warns_once_per_key(caplog):
    space, defaults = {"margin": Float(0.05, 0.5)}, {"margin": 0.2, "embed_dim": 32}
    check_domains("method legacy", space, defaults, {}, {})  # accepted, not refused
    check_domains("method legacy", space, defaults, {}, {})  # a second pair or trial: no second warning
    warnings = [r.getMessage() for r in caplog.records if "legacy" in r.getMessage()]
    assert warnings == [
        "deprecated: method legacy declares no domain for hyperparameter 'embed_dim'; using a whole number >= 1, "
        "inferred from its default and range (declare it in `domains`)",
        "deprecated: method legacy declares no domain for hyperparameter 'margin'; using a number > 0, "
        "inferred from its default and range (declare it in `domains`)"]
    with pytest.raises(HarnessError, match="--set embed_dim=0: embed_dim must be a whole number >= 1"):
        check_domains("method legacy", space, defaults, {"embed_dim": 0}, {})
    with pytest.raises(HarnessError, match="--set margin=-0.1: margin must be a number > 0"):
        check_domains("method legacy", space, defaults, {"margin": -0.1}, {})
