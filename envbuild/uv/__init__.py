"""Everything that knows uv: its argv and environment, the generated pyproject, lock audits."""
