"""Python packaging formats as values: requirement files, merges, uv.lock, the lock folder."""
