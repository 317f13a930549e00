"""The deployment's settings: envbuild.toml, mirrors and node pins, read and validated."""
