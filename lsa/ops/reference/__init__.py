"""Pure-PyTorch references of lsa's ops (unfold-based, differentiable): test oracles."""
from .elsa import elsa_ref  # noqa: F401
