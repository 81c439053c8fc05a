"""Helpers shared by the tests: media, shards, checkpoints, hardening tools, the RELIABILITY.md
plugin."""
