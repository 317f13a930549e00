"""HTTP: reading package indexes and remote wheels (the only place that imports httpx)."""
