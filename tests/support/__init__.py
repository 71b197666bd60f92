"""Test support: real databases, a real HTTP server, and small helpers."""
