"""Lazy loading of the compiled CUDA extensions of ``pcdet.ops``.

The extensions (``pcdet.ops.<op>.<op>_cuda``) exist only when the package was installed with the CUDA build
enabled (see setup.py). Ops call ``load_cuda_ext`` inside their CUDA code path, never at import time, so the
CPU paths and everything else work without them.
"""
import importlib

_CACHE = {}


def load_cuda_ext(name):
    """Import and return the compiled extension ``pcdet.ops.<name>.<leaf>_cuda``, leaf = the last part of name.

    Args:
        name: op package name, e.g. 'iou3d_nms', 'roiaware_pool3d', 'knn', or the dotted name of a nested one:
            'pointnet2.pointnet2_batch' loads ``pcdet.ops.pointnet2.pointnet2_batch.pointnet2_batch_cuda``.
    Raises:
        ImportError explaining how to build the extension when it is not available.
    """
    if name in _CACHE:
        return _CACHE[name]
    module_name = f'pcdet.ops.{name}.{name.rsplit(".", 1)[-1]}_cuda'
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f'{module_name} is not built ({exc}). The CUDA ops are compiled only when CUDA is present: with a CUDA '
            'build of torch and a CUDA toolkit (nvcc, CUDA_HOME), run '
            '`PCDET_BUILD_CUDA=1 pip install --no-build-isolation -e .` in the repository root. '
            'CPU tensors do not need it.') from exc
    _CACHE[name] = module
    return module
