"""The mutation score of the core numerical modules: `python -m tests.mutation [MODULE ...]` (docs/mutation.md).

One TOML per mutated module in this folder names the module, the test files its mutants run against and the
surviving mutants that compute the same thing as the original (each with its reason). Nothing here is a test
file: the default pytest run never starts mutmut (tests/conftest.py also keeps pytest out of this folder).
"""
