"""Hermetic test support: tiny wheels and a loopback package index (see index.py, wheels.py)."""
