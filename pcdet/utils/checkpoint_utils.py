"""Checkpoint dicts: build, save atomically, load (ours and OpenPCDet's legacy files), resume.

Checkpoint dict (OpenPCDet keys)::

    {'epoch': int, 'it': int, 'model_state': OrderedDict[str, Tensor (CPU)],
     'optimizer_state': dict | None, 'version': 'pcdet+<ver>', ['distill_state': OrderedDict]}

``model_state`` is always the detector (the student when distilling), so a distillation checkpoint loads
strictly into the plain student config; ``distill_state`` holds the distillation adapters. Optimizer states
hold Python numbers and tensors only, so files load under ``torch.load(weights_only=True)``.
"""
import os
import tempfile
from collections import OrderedDict

import torch


def unwrap_model(model):
    """Return the module inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, 'module') and isinstance(model.module, torch.nn.Module) else model


def model_state_to_cpu(model_state):
    """Copy a state_dict to CPU tensors (keeps the key order)."""
    return OrderedDict((k, v.detach().cpu() if torch.is_tensor(v) else v) for k, v in model_state.items())


def _to_python(obj):
    """Recursively turn numpy scalars / arrays into Python numbers / tensors (weights_only-safe)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a hard dependency of pcdet
        np = None
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return type(obj)((k, _to_python(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) \
            else {k: _to_python(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_to_python(v) for v in obj)
    if isinstance(obj, list):
        return [_to_python(v) for v in obj]
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    return obj


def sanitize_optimizer_state(optim_state):
    """Optimizer state_dict with numpy scalars (fastai OneCycle writes np.float64 lr/betas) made Python floats."""
    return None if optim_state is None else _to_python(optim_state)


def checkpoint_state(model=None, optimizer=None, epoch=None, it=None):
    """Build the checkpoint dict of a detector or a Distiller (plain, DDP-wrapped or DataParallel-wrapped).

    Args:
        model: nn.Module; when it (or ``model.module``) has ``.student``, it is a Distiller: ``model_state`` is
            the student's state_dict and ``distill_state`` the adapters'.
        optimizer: torch optimizer or OptimWrapper (anything with ``state_dict()``), or None.
        epoch: completed epochs (``checkpoint_epoch_N``) or the unfinished 0-based epoch (``latest_model``).
        it: accumulated iterations.
    """
    from pcdet import __version__
    optim_state = sanitize_optimizer_state(optimizer.state_dict()) if optimizer is not None else None
    state = {'epoch': epoch, 'it': it, 'model_state': None, 'optimizer_state': optim_state,
             'version': 'pcdet+' + __version__}
    if model is not None:
        core = unwrap_model(model)
        if hasattr(core, 'student'):
            state['model_state'] = model_state_to_cpu(core.student.state_dict())
            adapters = getattr(core, 'adapters', None)
            state['distill_state'] = model_state_to_cpu(adapters.state_dict()) if adapters is not None \
                else OrderedDict()
        else:
            state['model_state'] = model_state_to_cpu(core.state_dict())
    return state


def save_checkpoint(state, filename='checkpoint'):
    """Write ``state`` to ``filename`` (``.pth`` appended when missing) atomically.

    The bytes go to a temp file in the same directory, are fsync'ed, then ``os.replace`` puts them in place:
    a crash (SIGKILL, full disk) leaves either the old file or the new one, never a truncated one.
    Returns the final path.
    """
    filename = str(filename)
    if not filename.endswith('.pth'):
        filename = filename + '.pth'
    directory = os.path.dirname(os.path.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(filename) + '.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable; not possible on every filesystem
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return filename


def _numpy_safe_globals():
    """numpy types that OpenPCDet's legacy optimizer states pickle (np.float64 lr / betas)."""
    import numpy as np
    out = [np.dtype]
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = __import__(mod_name, fromlist=['scalar'])
            out.append(mod.scalar)
            break
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return out


def load_checkpoint(filename, map_location='cpu', allow_unsafe=False):
    """Load a checkpoint file: ours, or OpenPCDet's legacy (non-zip, numpy scalars in the optimizer state).

    Tries ``weights_only=True``; on failure retries weights-only with numpy scalar types allow-listed (what
    OpenPCDet's OneCycle stores); only ``allow_unsafe=True`` falls back to a full unpickle (trusted files only).
    The returned optimizer state is sanitised (Python floats). Raises ``FileNotFoundError`` / ``RuntimeError``
    naming the file.
    """
    filename = str(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        ckpt = torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as err_plain:  # noqa: BLE001 - the unpickler raises several types
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                ckpt = torch.load(filename, map_location=map_location, weights_only=True)
        except Exception as err_np:  # noqa: BLE001
            if not allow_unsafe:
                raise RuntimeError(f'{filename}: cannot be loaded with weights_only=True ({err_plain}); '
                                   f'with numpy types allowed: {err_np}. Load it with allow_unsafe=True only if '
                                   'you trust the file.') from err_np
            ckpt = torch.load(filename, map_location=map_location, weights_only=False)
    if isinstance(ckpt, dict) and ckpt.get('optimizer_state') is not None:
        ckpt['optimizer_state'] = sanitize_optimizer_state(ckpt['optimizer_state'])
    return ckpt


def _load_strict(module, state, what, filename):
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f'{filename}: {what} does not match the model: missing keys {list(missing)}, '
                           f'unexpected keys {list(unexpected)}')


def load_params_with_optimizer(model, filename, optimizer=None, logger=None, map_location='cpu'):
    """Resume: strictly load model (+ adapters for a Distiller) and optimizer state; return ``(it, epoch)``.

    Works on a plain detector, a Distiller, or either wrapped in DDP. Legacy OpenPCDet checkpoints load too
    (keys identical); a missing ``optimizer_state`` is logged and skipped.
    """
    ckpt = load_checkpoint(filename, map_location=map_location)
    if not isinstance(ckpt, dict) or 'model_state' not in ckpt:
        raise RuntimeError(f'{filename}: not a pcdet checkpoint (no "model_state" key)')
    core = unwrap_model(model)
    if logger is not None:
        logger.info('==> Loading parameters from checkpoint %s to %s', filename, map_location)
    if hasattr(core, 'student'):
        _load_strict(core.student, ckpt['model_state'], 'model_state', filename)
        if getattr(core, 'adapters', None) is not None and len(list(core.adapters.parameters())) > 0:
            if 'distill_state' not in ckpt:
                raise RuntimeError(f'{filename}: resuming a distillation needs "distill_state" (adapters), '
                                   'the checkpoint has none')
            _load_strict(core.adapters, ckpt['distill_state'], 'distill_state', filename)
    else:
        _load_strict(core, ckpt['model_state'], 'model_state', filename)
    if optimizer is not None:
        if ckpt.get('optimizer_state') is not None:
            if logger is not None:
                logger.info('==> Loading optimizer parameters from checkpoint %s', filename)
            optimizer.load_state_dict(ckpt['optimizer_state'])
        elif logger is not None:
            logger.info('==> %s has no optimizer state: optimizer starts fresh', filename)
    epoch = int(ckpt.get('epoch', -1) if ckpt.get('epoch') is not None else -1)
    it = int(ckpt.get('it', 0) if ckpt.get('it') is not None else 0)
    if logger is not None:
        logger.info('==> Done (epoch %d, it %d, version %s)', epoch, it, ckpt.get('version', 'none'))
    return it, epoch
