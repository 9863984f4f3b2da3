"""Type aliases shared across lsa."""
from typing import Sequence, Tuple, Union

IntOr2Tuple = Union[int, Tuple[int, int]]
OutIndices = Union[int, Sequence[int]]
