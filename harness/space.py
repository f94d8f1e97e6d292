"""The pre-0.2 home of `harness.api.space`, kept so plugins written against it still import."""

from harness.api.space import *  # noqa: F401,F403
