"""Errors that the command line reports as one line (no stack trace)."""


class BenchmarkError(Exception):
    """Bad input: the message names the file, row, column or config key."""
