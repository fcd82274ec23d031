"""Score tables: one row of measurements per fact and model, cached in chunks, with distractors and formats."""

DEFAULT_DISTRACTORS = 20
"""Distractors scored per fact when the facts name a relation and the user gave no count (here, not in
``distractors``, so that ``massshift --help`` can state it without importing pandas)."""
