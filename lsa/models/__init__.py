"""Importing this module registers every lsa block and backbone (target of ``custom_imports``)."""
from . import backbones, layers  # noqa: F401
