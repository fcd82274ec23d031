"""Facts: files and presets, answer matching, fact-level split and dedup, real fact sources."""
