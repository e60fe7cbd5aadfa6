"""Shared test support: servers started on loopback, settings and file helpers."""
