"""Helpers shared by test files (importable as ``helpers``: pyproject puts ``tests/`` on
``sys.path``, since ``--import-mode=importlib`` test files cannot import each other)."""
