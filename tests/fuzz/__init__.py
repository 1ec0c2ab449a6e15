"""Fuzzing of every parser that takes outside input (docs/fuzzing.md).

Each `test_fuzz_*` is a hypothesis test whose example budget comes from the environment
(`TRACEGATE_FUZZ_EXAMPLES`; small and derandomized in `make test`); `python -m bench.fuzz`
runs the campaign. `test_bug_*` reproduce what the fuzzers found: strict xfails while a finding
is open, regression tests once it is fixed.
"""
