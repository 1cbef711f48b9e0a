"""Vendored Camtrap DP 1.0 profile and table schemas (MIT, see LICENSE), for offline checks."""
