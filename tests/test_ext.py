"""lsa._C is built and loaded; a missing extension gives one clear error."""
import runpy

import pytest

from lsa.ops import _ext


def test_extension_loaded():
    assert _ext.HAS_EXT, f'lsa._C failed to load: {_ext.EXT_ERROR}'


def test_missing_extension_error_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_ext, 'HAS_EXT', False)
    monkeypatch.setattr(_ext, 'EXT_ERROR', 'No module named lsa._C')
    with pytest.raises(RuntimeError, match=r'(?s)lsa\.ops\.aggregation: lsa\._C .*pip install -e \. '
                                           r'--no-build-isolation'):
        _ext.require_ext('aggregation')


def test_info_reports_extension(capsys):
    """``python -m lsa.info``, run as ``__main__`` in this interpreter (a fresh one costs ~6 s
    of imports and checks nothing more: the import-side-effect checks are in test_compat)."""
    runpy.run_module('lsa.info', run_name='__main__')
    out = capsys.readouterr().out
    assert 'lsa._C loaded: True' in out
    assert 'lsa._C CUDA kernels: ' in out
    assert 'mmengine: 0.10.7' in out
