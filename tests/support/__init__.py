"""Test helpers shared by the suites (import them as ``tests.support.<module>``; pytest puts
the repository root on ``sys.path``, see ``pythonpath`` in pyproject.toml)."""
