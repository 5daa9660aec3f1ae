"""The bad-input corpus: cases grouped by what is bad (data files, CLI options, API arguments,
artifact files). `tests/test_bad_inputs.py` runs every case; each module here owns one group."""
