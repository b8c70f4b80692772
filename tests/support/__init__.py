"""Shared test fixtures and helpers, loaded for every test module by ``pytest_plugins`` in tests/conftest.py
(docs/testing.md)."""
