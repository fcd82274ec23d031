"""The compare run directory: writing and loading it, its markdown report, figures, the notebook API."""
