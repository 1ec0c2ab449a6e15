"""Benchmarks (`python -m bench`, or `make bench`): figures printed beside their targets and the
ceiling measured in the same run. Not tests: nothing here asserts; everything here measures."""
