"""Finite training sets: exact gradient-descent curves of linear models."""
