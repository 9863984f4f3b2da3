"""``python -m lsa.info``: versions, and whether ``lsa._C`` and its CUDA kernels load."""
from __future__ import annotations

import importlib
import platform
import sys


def collect_env() -> dict[str, str]:
    """Environment facts as an ordered ``name -> value`` dict."""
    import torch

    import lsa
    from lsa.compat import apply
    from lsa.ops import _ext

    apply()  # torchvision (through mmpretrain) imports on CPU torch only with the shim

    env = {'sys.platform': sys.platform, 'Python': sys.version.replace('\n', ''),
           'machine': platform.machine(), 'lsa': lsa.__version__,
           'torch': torch.__version__, 'torch CUDA': str(torch.version.cuda),
           'CUDA available': str(torch.cuda.is_available())}
    if torch.cuda.is_available():
        env['GPU'] = torch.cuda.get_device_name(0)
    env['lsa._C loaded'] = str(_ext.HAS_EXT) + ('' if _ext.HAS_EXT else f' ({_ext.EXT_ERROR})')
    env['lsa._C CUDA kernels'] = str(_ext.has_cuda_kernels())
    if _ext.has_cuda_kernels():
        env['lsa._C CUDA version'] = str(_ext.cuda_version())
    for mod in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'numpy'):
        try:
            m = importlib.import_module(mod)
            env[mod] = getattr(m, '__version__', '?')
        except Exception as e:  # noqa: BLE001 - report any import failure as text
            env[mod] = f'not importable ({type(e).__name__}: {e})'
    try:
        importlib.import_module('mmcv._ext')
        env['mmcv ops (_ext)'] = 'True'
    except Exception as e:  # noqa: BLE001
        env['mmcv ops (_ext)'] = f'False ({type(e).__name__})'
    return env


def main() -> None:
    for k, v in collect_env().items():
        print(f'{k}: {v}')


if __name__ == '__main__':
    main()
