"""The pre-0.2 home of `harness.api.catalog`, kept so plugins written against it still import."""

from harness.api.catalog import *  # noqa: F401,F403
