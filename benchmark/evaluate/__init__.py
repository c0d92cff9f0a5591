"""Evaluation protocols; each writes per-image predictions (see ``predictions.py``)."""
