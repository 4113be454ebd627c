"""Install the ``pcdet`` package; CUDA extensions are built only where CUDA exists.

``pip install -e .`` works on a machine without a CUDA toolkit and compiles nothing. The compiled ops are
built when the environment variable ``PCDET_BUILD_CUDA`` says so:

- ``auto`` (default): build if torch is importable, ``torch.version.cuda`` is not None (a CUDA build of
  torch) and torch finds a CUDA toolkit (``CUDA_HOME``).
- ``1``: build, and fail with a clear message if that is impossible.
- ``0``: never build.

torch must be importable while setup.py runs to build the extensions, so a CUDA build uses
``pip install --no-build-isolation -e .`` (pip's isolated build environment does not contain torch).
This file never imports ``pcdet`` (that would need the package to be installed already).
"""
import glob
import os
import re
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# (extension module name, source directory relative to the repo root)
CUDA_EXTENSIONS = [
    ('pcdet.ops.iou3d_nms.iou3d_nms_cuda', 'pcdet/ops/iou3d_nms/src'),
    ('pcdet.ops.roiaware_pool3d.roiaware_pool3d_cuda', 'pcdet/ops/roiaware_pool3d/src'),
    ('pcdet.ops.knn.knn_cuda', 'pcdet/ops/knn/src'),
    ('pcdet.ops.pointnet2.pointnet2_batch.pointnet2_batch_cuda', 'pcdet/ops/pointnet2/pointnet2_batch/src'),
    ('pcdet.ops.roipoint_pool3d.roipoint_pool3d_cuda', 'pcdet/ops/roipoint_pool3d/src'),
]


def read_version():
    """Parse ``__version__`` from pcdet/version.py without importing pcdet (which would need torch later)."""
    path = os.path.join(HERE, 'pcdet', 'version.py')
    with open(path, encoding='utf-8') as f:
        match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read(), re.M)
    if match is None:
        raise RuntimeError(f'{path}: no line of the form __version__ = "x.y.z"')
    return match.group(1)


def build_mode():
    """Return 'auto', '1' or '0' from PCDET_BUILD_CUDA; anything else is an error."""
    mode = os.environ.get('PCDET_BUILD_CUDA', 'auto').strip().lower()
    if mode not in ('auto', '1', '0'):
        raise SystemExit(f'PCDET_BUILD_CUDA={mode!r}: expected one of auto, 1, 0')
    return mode


def cuda_available_for_build():
    """(ok, reason): whether torch can compile CUDA extensions here."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError as exc:
        return False, f'torch is not importable during setup ({exc}); use pip install --no-build-isolation'
    if torch.version.cuda is None:
        return False, f'torch {torch.__version__} is a CPU-only build'
    if CUDA_HOME is None:
        return False, 'no CUDA toolkit found (set CUDA_HOME)'
    return True, f'torch {torch.__version__} with CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME}'


def cuda_ext_modules(mode):
    """Return (ext_modules, cmdclass) for the compiled ops, both empty when nothing is built."""
    if mode == '0':
        return [], {}
    ok, reason = cuda_available_for_build()
    if not ok:
        if mode == '1':
            raise SystemExit(f'PCDET_BUILD_CUDA=1 but the CUDA extensions cannot be built: {reason}')
        print(f'[pcdet setup] skipping CUDA extensions: {reason}', file=sys.stderr)
        return [], {}

    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    modules = []
    for name, src_dir in CUDA_EXTENSIONS:
        # Globbed at build time: the op sources are added by the op owners; paths must be repo-relative.
        sources = sorted(glob.glob(os.path.join(src_dir, '*.cpp')) + glob.glob(os.path.join(src_dir, '*.cu')))
        if not sources:
            message = f'no *.cpp / *.cu sources in {src_dir} for {name}'
            if mode == '1':
                raise SystemExit(f'PCDET_BUILD_CUDA=1: {message}')
            print(f'[pcdet setup] skipping {name}: {message}', file=sys.stderr)
            continue
        modules.append(CUDAExtension(
            name=name,
            sources=sources,
            extra_compile_args={'cxx': ['-O3'], 'nvcc': ['-O3']},
        ))
    print(f'[pcdet setup] building {len(modules)} CUDA extension(s): {reason}', file=sys.stderr)
    return modules, {'build_ext': BuildExtension}


# Source globs below are repo-relative; pip runs setup.py from the repo root, be explicit anyway.
os.chdir(HERE)
ext_modules, cmdclass = cuda_ext_modules(build_mode())
setup(
    name='pcdet',
    version=read_version(),
    description='OpenPCDet-compatible LiDAR 3D detection toolbox with knowledge distillation (PointDistiller)',
    python_requires='>=3.10',  # torch 2.13 supports Python 3.10 and newer
    # spconv is not listed: its package name depends on the platform (spconv for CPU, spconv-cu126 etc.
    # for CUDA). requirements.txt pins the CPU default; the README says what CUDA users install.
    install_requires=[
        'torch>=2.1',
        'numpy',
        'numba',
        'easydict',
        'pyyaml',
        'tensorboardX',
        'scikit-image',
        'scipy',  # already a dependency of scikit-image; used directly for OpenPCDet's in_hull point counts
        'tqdm',
        'matplotlib',
    ],
    # pcdet.deploy (tools/export_onnx.py, tools/test.py --onnx): pip install -e .[deploy]. onnxscript is what
    # torch.onnx's dynamo exporter (the one pcdet.deploy uses) needs; requirements-dev.txt pins the tested versions.
    extras_require={
        'deploy': ['onnx>=1.23', 'onnxruntime>=1.31', 'onnxscript>=0.7'],
    },
    packages=find_packages(exclude=('tools', 'tools.*', 'tests', 'tests.*', 'data', 'output', 'docker',
                                    'benchmarks', 'benchmarks.*')),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
