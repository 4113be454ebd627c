"""The one place that imports spconv (2.x), lazily, with a CPU shim.

spconv 2.3.8's CPU backward passes call ``spconv.pytorch.ops.get_current_stream()``, which calls
``torch.cuda.current_stream()`` and fails on a CPU-only torch. ``import_spconv`` replaces that function (once)
by one that returns the current CUDA stream handle when CUDA is available and 0 (the null stream, ignored by
the CPU kernels) otherwise. Nothing else in spconv is changed.

Usage: ``spconv = import_spconv()`` inside the module or function that needs it, or
``from pcdet.utils.spconv_utils import spconv`` (resolved lazily by the module ``__getattr__`` below).
"""
import torch

_SPCONV = None


def _current_stream_or_null():
    """CUDA stream handle (int) when CUDA is available, else 0."""
    if torch.cuda.is_available():
        return torch.cuda.current_stream().cuda_stream
    return 0


def import_spconv():
    """Import and return ``spconv.pytorch`` with the CPU shim applied (idempotent)."""
    global _SPCONV
    if _SPCONV is None:
        try:
            import spconv.pytorch as spconv_pytorch
            from spconv.pytorch import hash as spconv_hash
            from spconv.pytorch import ops as spconv_ops
        except ImportError as exc:
            raise ImportError(
                'spconv 2.x is required here (pip install spconv==2.3.8 for CPU, or spconv-cu126 etc. for CUDA); '
                f'import failed: {exc}') from exc
        # The modules bound the name at import (from-import), so patch it where it is looked up.
        for module in (spconv_ops, spconv_hash):
            if hasattr(module, 'get_current_stream'):
                module.get_current_stream = _current_stream_or_null
        _SPCONV = spconv_pytorch
    return _SPCONV


def __getattr__(name):
    # PEP 562: ``from pcdet.utils.spconv_utils import spconv`` imports spconv only when asked for.
    if name == 'spconv':
        return import_spconv()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def replace_feature(out, new_features):
    """Return sparse tensor ``out`` with its features replaced by ``new_features`` (N, C) (spconv 1.x and 2.x)."""
    if hasattr(out, 'replace_feature'):
        return out.replace_feature(new_features)
    out.features = new_features
    return out


def find_all_spconv_keys(model, prefix=''):
    """State-dict keys (``'<module path>.weight'``) of every spconv convolution in ``model``.

    Used by checkpoint loading to recognise sparse-conv weights whose layout may need transposing.
    """
    spconv = import_spconv()
    found_keys = set()
    for name, child in model.named_children():
        new_prefix = f'{prefix}.{name}' if prefix else name
        if isinstance(child, spconv.conv.SparseConvolution):
            found_keys.add(f'{new_prefix}.weight')
        found_keys.update(find_all_spconv_keys(child, prefix=new_prefix))
    return found_keys
