"""Model analysis: FLOP counting that includes lsa's attention ops.

Import explicitly (``from lsa.analysis import complexity_info``); it needs mmengine.
"""
from .flops import LSA_FLOP_HANDLES, SAN_COUNTER_HANDLES, complexity_info, flop_analyzer

__all__ = ['LSA_FLOP_HANDLES', 'SAN_COUNTER_HANDLES', 'complexity_info', 'flop_analyzer']
