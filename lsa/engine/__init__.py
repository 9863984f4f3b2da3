"""Runner hooks lsa's tools use (registered in ``lsa.registry.HOOKS``, scope ``lsa``)."""
from .checkpoint_hook import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook']
