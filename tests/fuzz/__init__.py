"""Fuzzing of every parser that takes outside input (docs/fuzzing.md).

Each `test_fuzz_*` is a hypothesis test whose example budget comes from the environment
(`TRACEGATE_FUZZ_EXAMPLES`; small and derandomized in `make test`); `python -m bench.fuzz`
runs the campaign. `test_bug_*` are strict-xfail reproductions of what the fuzzers found.
"""
