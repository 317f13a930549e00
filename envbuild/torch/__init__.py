"""Torch and GPU knowledge: profiles, the catalogue, the torch family, companions, GPU fit."""
