"""Importing this module applies :func:`lsa.compat.apply` (for a config's ``custom_imports``).

Name it first so the fixes are in place before the toolboxes load anything, e.g. when a
config is run by mmdet's, mmseg's or mmpretrain's own ``tools/train.py``::

    custom_imports = dict(imports=['lsa.compat_apply', 'lsa.models'], allow_failed_imports=False)
"""
from lsa.compat import apply

apply()
