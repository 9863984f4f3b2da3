"""Build and install lsa, compiling ``lsa._C`` from ``csrc/``.

C++ CPU sources are always built (OpenMP on). CUDA sources (``csrc/**/*.cu``)
are built when a CUDA torch and toolkit are present, or when forced with
``LSA_WITH_CUDA=1`` (``LSA_WITH_CUDA=0`` turns them off). ``MAX_JOBS`` caps
ninja's parallelism.

    pip install -e . --no-build-isolation
"""
import glob
import os
import os.path as osp
import re

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def get_version() -> str:
    with open(osp.join(ROOT, 'lsa', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(fname: str) -> list:
    """Read ``requirements/<fname>``, following ``-r`` includes."""
    reqs = []
    with open(osp.join(ROOT, 'requirements', fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(line[3:].strip())
            elif not line.startswith('-'):
                reqs.append(line)
    return reqs


def _want_cuda(torch, cuda_home) -> bool:
    flag = os.environ.get('LSA_WITH_CUDA', 'auto').lower()
    if flag in ('0', 'false', 'off'):
        return False
    if flag in ('1', 'true', 'on'):
        if cuda_home is None:
            raise RuntimeError('LSA_WITH_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME).')
        return True
    return torch.version.cuda is not None and cuda_home is not None and (
        torch.cuda.is_available() or os.environ.get('FORCE_CUDA') == '1')


def get_extensions() -> list:
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension
    except ImportError:
        print('lsa: torch is not importable, building without lsa._C '
              '(install torch==2.13.0 first and use --no-build-isolation)')
        return []
    if os.environ.get('LSA_WITH_OPS', '1') == '0':
        return []
    sources = sorted(glob.glob(osp.join('csrc', '**', '*.cpp'), recursive=True))
    cuda_sources = sorted(glob.glob(osp.join('csrc', '**', '*.cu'), recursive=True))
    include_dirs = [osp.join(ROOT, 'csrc', 'include')]
    extra_compile_args = {'cxx': ['-O3', '-fopenmp']}
    extra_link_args = ['-fopenmp']
    define_macros = []
    ext_cls = CppExtension
    if _want_cuda(torch, CUDA_HOME) and cuda_sources:
        ext_cls = CUDAExtension
        sources += cuda_sources
        define_macros.append(('LSA_WITH_CUDA', None))
        extra_compile_args['nvcc'] = ['-O3', '--expt-relaxed-constexpr', '-lineinfo']
    print(f'lsa: building lsa._C with {ext_cls.__name__} from {len(sources)} sources')
    return [ext_cls(
        name='lsa._C', sources=sources, include_dirs=include_dirs, define_macros=define_macros,
        extra_compile_args=extra_compile_args, extra_link_args=extra_link_args)]


def get_cmdclass() -> dict:
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError:
        return {}
    return {'build_ext': BuildExtension.with_options(no_python_abi_suffix=False)}


setup(
    name='lsa',
    version=get_version(),
    description='Local self-attention backbones (SAN, LESA, ELSA, LocalViT) for OpenMMLab',
    long_description=open(osp.join(ROOT, 'README.md')).read() if osp.exists(osp.join(ROOT, 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['lsa', 'lsa.*']),
    include_package_data=True,
    install_requires=parse_requirements('runtime.txt'),
    extras_require={
        'mminstall': parse_requirements('mminstall.txt'),
        'tests': parse_requirements('tests.txt'),
        'all': parse_requirements('mminstall.txt') + parse_requirements('tests.txt'),
    },
    ext_modules=get_extensions(),
    cmdclass=get_cmdclass(),
    zip_safe=False,
)
