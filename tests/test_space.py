import pytest

from harness.errors import HarnessError
from harness.space import Choice, Float, Int, parse_overrides, typed_overrides

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
