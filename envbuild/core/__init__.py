"""Infrastructure: errors, files, TOML, subprocesses, HTTP. Knows nothing of packages or torch."""
