"""Whole studies built from the library: the demo, the country study, attribution, baselines."""
