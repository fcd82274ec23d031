"""Score tables: one row of measurements per fact and model, cached in chunks, with distractors and formats."""
