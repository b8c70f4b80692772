"""Test doubles: emulators and simulators of the systems the tests cannot reach (docs/testing.md)."""
