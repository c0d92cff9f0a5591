"""Mammography vision-language pretraining benchmark.

The package holds the framework (data, training, evaluation, statistics, tables);
every method lives in its own file under ``models/``.
"""

__version__ = "0.1.0"
