"""Helpers shared by the tests: the CLI as a subprocess, the SDK as a teammate."""
