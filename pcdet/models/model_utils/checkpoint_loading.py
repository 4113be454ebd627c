"""Loading model weights from OpenPCDet-format checkpoints into a detector (used by ``Detector3DTemplate``).

A checkpoint is ``{'model_state': state_dict, 'optimizer_state': ..., 'epoch', 'it', 'version'}`` (a bare state
dict is accepted too). Files are read with ``torch.load(weights_only=True)`` first; OpenPCDet's own legacy
checkpoints (numpy scalars in the optimizer state) need the full unpickler, used only as a fallback and logged.

Sparse-conv weights are transposed between spconv layouts when the stored shape differs from the model's:
spconv 1.x ``(kz, ky, kx, Cin, Cout)``, 2.x native ``(kz, ky, kx, Cout, Cin)``, 2.x implicit-gemm / this
toolbox ``(Cout, kz, ky, kx, Cin)``. With Cin == Cout the 1.x and native layouts have the same shape; 1.x is
assumed (OpenPCDet's model-zoo checkpoints were saved with spconv 1.x).
"""
import logging
import os
import pickle
import sys

import torch

# permutations of a stored 5-D weight tried in order when its shape differs from the model's
SPCONV_PERMUTATIONS = (
    (4, 0, 1, 2, 3),  # 1.x (k, k, k, Cin, Cout)  -> (Cout, k, k, k, Cin)
    (3, 0, 1, 2, 4),  # native (k, k, k, Cout, Cin) -> (Cout, k, k, k, Cin)
    (0, 1, 2, 4, 3),  # 1.x -> native (model built with the native layout)
    (1, 2, 3, 0, 4),  # (Cout, k, k, k, Cin) -> native
)


class CheckpointMismatchError(RuntimeError):
    """Strict loading found missing, unexpected or mis-shaped keys."""


def torch_load(filename, map_location=None, logger=None):
    """``torch.load`` with ``weights_only=True``, falling back to the full unpickler for legacy files."""
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint not found: {filename}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        (logger or logging.getLogger(__name__)).warning(
            '%s is not loadable with weights_only=True (legacy OpenPCDet checkpoint: %s); loading it with the full '
            'unpickler - only do this for files you trust', filename, str(exc).splitlines()[0])
        return torch.load(filename, map_location=map_location, weights_only=False)


def model_state_from_checkpoint(checkpoint, filename):
    """The state dict inside a loaded checkpoint (``model_state``, or the checkpoint itself if it is one)."""
    if isinstance(checkpoint, dict) and 'model_state' in checkpoint:
        return checkpoint['model_state']
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        return checkpoint
    keys = list(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise KeyError(f'{filename}: no "model_state" in the checkpoint (found {keys})')


def spconv_weight_keys(model):
    """State-dict keys of sparse-conv weights; empty without importing spconv when it was never imported."""
    if 'spconv' not in sys.modules:  # a model with sparse convs has imported spconv while being built
        return set()
    from pcdet.utils.spconv_utils import find_all_spconv_keys
    return find_all_spconv_keys(model)


def convert_spconv_weight(val, target_shape):
    """``val`` permuted into ``target_shape`` by one of the known spconv layout changes, or None."""
    if val.dim() != 5 or len(target_shape) != 5:
        return None
    for perm in SPCONV_PERMUTATIONS:
        if tuple(val.shape[i] for i in perm) == tuple(target_shape):
            return val.permute(*perm).contiguous()
    return None


def match_state_dict(model, model_state_disk):
    """Compare a stored state dict with the model's.

    Returns:
        (model_state, update_state, missing, unexpected, mismatched): the model's current state dict; the stored
        tensors that fit (spconv weights already converted); keys absent from the file; keys absent from the
        model; ``[(key, stored shape, model shape)]`` for shape mismatches.
    """
    model_state = model.state_dict()
    spconv_keys = spconv_weight_keys(model)
    update_state, mismatched = {}, []
    for key, val in model_state_disk.items():
        if key not in model_state:
            continue
        target_shape = model_state[key].shape
        if key in spconv_keys and val.shape != target_shape:
            converted = convert_spconv_weight(val, target_shape)
            val = converted if converted is not None else val
        if val.shape == target_shape:
            update_state[key] = val
        else:
            mismatched.append((key, tuple(val.shape), tuple(target_shape)))
    missing = [k for k in model_state if k not in model_state_disk]
    unexpected = [k for k in model_state_disk if k not in model_state]
    return model_state, update_state, missing, unexpected, mismatched


def format_mismatch(filename, missing, unexpected, mismatched):
    lines = [f'{filename}: checkpoint does not match the model']
    if missing:
        lines.append(f'  missing keys ({len(missing)}): {missing}')
    if unexpected:
        lines.append(f'  unexpected keys ({len(unexpected)}): {unexpected}')
    if mismatched:
        lines.append(f'  mis-shaped keys ({len(mismatched)}): '
                     + ', '.join(f'{k} (checkpoint {s}, model {m})' for k, s, m in mismatched))
    return '\n'.join(lines)


def load_state_into_model(model, model_state_disk, strict, filename, logger):
    """Load matching tensors; strict -> ``CheckpointMismatchError`` listing every difference, else log them.

    Returns:
        (model_state, update_state) as OpenPCDet's ``_load_state_dict``.
    """
    model_state, update_state, missing, unexpected, mismatched = match_state_dict(model, model_state_disk)
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatchError(format_mismatch(filename, missing, unexpected, mismatched))
    if logger is not None:
        for key, stored, expected in mismatched:
            logger.info('Shape mismatch, not loaded %s: checkpoint %s, model %s', key, stored, expected)
        for key in unexpected:
            logger.info('Unexpected key in checkpoint, ignored: %s', key)
    model_state = dict(model_state)
    model_state.update(update_state)
    model.load_state_dict(model_state, strict=True)
    return model_state, update_state
