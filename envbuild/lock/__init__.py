"""The lock pipeline: the plan, freshness, trust, settlements and the one `uv lock` pipeline."""
