"""Analysis of score tables (no torch): states, transitions, estimators, statistics."""
