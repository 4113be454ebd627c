"""Checkpoints: build, save atomically, and the one loader of every checkpoint the toolbox reads.

Checkpoint dict (OpenPCDet keys)::

    {'epoch': int, 'it': int, 'model_state': OrderedDict[str, Tensor (CPU)],
     'optimizer_state': dict | None, 'version': 'pcdet+<ver>', ['distill_state': OrderedDict],
     ['batch_size': int (total over processes, written by training)]}

``model_state`` is always the detector (the student when distilling), so a distillation checkpoint loads
strictly into the plain student config; ``distill_state`` holds the distillation adapters. Optimizer states
hold Python numbers and tensors only, so files load under ``torch.load(weights_only=True)``.

Reading (``load_checkpoint``) is always ``weights_only=True``. OpenPCDet's legacy files pickle numpy scalars
(fastai OneCycle's ``np.float64`` lr / betas); those numpy types are allow-listed, nothing else. A file that
needs any other global is refused with the globals it names (such a pickle can run code), unless the caller
passes ``allow_unsafe=True`` (the tools' ``--unsafe_load``), which is logged as a warning. Every failure is a
``CheckpointError`` whose message names the file and says what is wrong in one line.

Loading into a model (``load_model_state``, ``load_params_with_optimizer``) strips a DDP ``module.`` prefix,
converts spconv weight layouts, and checks everything before it changes anything: a checkpoint that does not fit
leaves the model and the optimizer as they were.
"""
import os
import pickle
import re
import tempfile
from collections import OrderedDict

import torch

from .state_dict_matching import StateDictMatch, strip_ddp_prefix


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and says why."""


class CheckpointMismatchError(CheckpointError):
    """Strict loading found missing, unexpected or mis-shaped keys (a checkpoint of another model)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


class NonFiniteStateError(CheckpointError):
    """A state about to be saved holds NaN or inf values."""


class ResumeMismatchError(CheckpointError):
    """A checkpoint that loads but cannot continue this run (another total batch size)."""


def unwrap_model(model):
    """Return the module inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, 'module') and isinstance(model.module, torch.nn.Module) else model


def model_state_to_cpu(model_state):
    """Copy a state_dict to CPU tensors (keeps the key order)."""
    return OrderedDict((k, v.detach().cpu() if torch.is_tensor(v) else v) for k, v in model_state.items())


def _to_python(obj):
    """Recursively turn numpy scalars / arrays into Python numbers / tensors (weights_only-safe)."""
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
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


def checkpoint_state(model=None, optimizer=None, epoch=None, it=None, batch_size=None):
    """Build the checkpoint dict of a detector or a Distiller (plain, DDP-wrapped or DataParallel-wrapped).

    Args:
        model: nn.Module; when it (or ``model.module``) has ``.student``, it is a Distiller: ``model_state`` is
            the student's state_dict and ``distill_state`` the adapters'.
        optimizer: torch optimizer or OptimWrapper (anything with ``state_dict()``), or None.
        epoch: completed epochs (``checkpoint_epoch_N``) or the unfinished 0-based epoch (``latest_model``).
        it: accumulated iterations.
        batch_size: total batch size over all processes (stored so that a resume with another one is refused).
    """
    from pcdet import __version__
    optim_state = sanitize_optimizer_state(optimizer.state_dict()) if optimizer is not None else None
    state = {'epoch': epoch, 'it': it, 'model_state': None, 'optimizer_state': optim_state,
             'version': 'pcdet+' + __version__}
    if batch_size is not None:
        state['batch_size'] = int(batch_size)
    if model is not None:
        core = unwrap_model(model)
        if hasattr(core, 'student'):
            state['model_state'] = model_state_to_cpu(core.student.state_dict())
            losses = getattr(core, 'losses', None)
            state['distill_state'] = model_state_to_cpu(losses.state_dict()) if losses is not None \
                else OrderedDict()
        else:
            state['model_state'] = model_state_to_cpu(core.state_dict())
    return state


def non_finite_tensors(state):
    """Keys of floating-point tensors in ``state`` (a state dict) that hold NaN or inf."""
    return [k for k, v in (state or {}).items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(state, filename='checkpoint'):
    """Write ``state`` to ``filename`` (``.pth`` appended when missing) atomically.

    The bytes go to a temp file in the same directory, are fsync'ed, then ``os.replace`` puts them in place:
    a crash (SIGKILL, full disk) leaves either the old file or the new one, never a truncated one. The file gets
    the mode an ordinary ``open`` would give it (0666 less the umask). A state whose ``model_state`` or
    ``distill_state`` holds NaN / inf is refused (``NonFiniteStateError``): it would poison a resume.
    Returns the final path.
    """
    filename = str(filename)
    bad = [f'{part}.{k}' for part in ('model_state', 'distill_state')
           for k in non_finite_tensors(state.get(part) if isinstance(state, dict) else None)]
    if bad:
        raise NonFiniteStateError(f'{filename}: not saved: {len(bad)} tensor(s) hold NaN/inf ({bad[:5]})')
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
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600
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


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------- reading
ZIP_MAGIC = b'PK\x03\x04'
PICKLE_PROTO_OPCODE = 0x80  # torch's legacy format starts with a protocol-2 pickle


def openpcdet_safe_globals():
    """The globals OpenPCDet checkpoints contain beyond what ``weights_only`` allows: numpy scalars, dtypes and
    arrays (fastai OneCycle's ``np.float64`` lr / betas in the optimizer state)."""
    import numpy as np
    out = [np.dtype, np.ndarray]
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = __import__(mod_name, fromlist=['scalar'])
        except ImportError:
            continue
        out += [getattr(mod, name) for name in ('scalar', '_reconstruct') if hasattr(mod, name)]
        break
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return out


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_is_checkpoint_file(filename):
    """Raise ``CheckpointError`` unless ``filename`` is a non-empty file that starts like a torch checkpoint."""
    if not os.path.exists(filename):
        raise CheckpointNotFoundError(f'{filename}: checkpoint file not found')
    if not os.path.isfile(filename):
        raise CheckpointError(f'{filename}: is not a file')
    with open(filename, 'rb') as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(f'{filename}: is empty (0 bytes), not a checkpoint')
    if not (head.startswith(ZIP_MAGIC) or head[0] == PICKLE_PROTO_OPCODE):
        kind = 'a text file' if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else 'an unknown format'
        raise CheckpointError(f'{filename}: is {kind} (starts with {head[:16]!r}), not a PyTorch checkpoint')


def _unsafe_globals_named(err):
    """Globals a weights-only load refused (``['posix.system']``), from torch's message."""
    return sorted(set(re.findall(r'GLOBAL ([\w.]+)', str(err))))


def load_checkpoint(filename, map_location='cpu', allow_unsafe=False, logger=None):
    """Read a checkpoint file (ours, or OpenPCDet's legacy format) without running code from it.

    Args:
        filename: path of a ``torch.save`` file.
        map_location: as ``torch.load``.
        allow_unsafe: read a file that needs globals outside the allow-list with the full unpickler (only for a
            file you trust; the tools' ``--unsafe_load``); logged as a warning.
        logger: where that warning goes (``logging.getLogger(__name__)`` when None).

    Returns:
        the loaded object (for our files a dict with the keys in the module docstring); ``optimizer_state`` is
        sanitised (Python floats).

    Raises:
        CheckpointError: one line naming the file: missing, empty, text, truncated / corrupt, or refused globals.
    """
    import logging
    filename = str(filename)
    _check_is_checkpoint_file(filename)
    try:
        with torch.serialization.safe_globals(openpcdet_safe_globals()):
            ckpt = torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _unsafe_globals_named(err)
        if not refused:
            raise CheckpointError(f'{filename}: truncated or corrupt checkpoint ({_first_line(err)})') from None
        if not allow_unsafe:
            raise CheckpointError(
                f'{filename}: refused: the file needs {refused}, which a checkpoint of weights does not contain '
                '(loading it could run code); pass --unsafe_load only if you trust the file') from None
        (logger or logging.getLogger(__name__)).warning(
            '--unsafe_load: reading %s with the full unpickler (it needs %s); this can run code from the file',
            filename, refused)
        try:
            ckpt = torch.load(filename, map_location=map_location, weights_only=False)
        except Exception as unsafe_err:  # noqa: BLE001 - any unpickling failure means: unreadable
            raise CheckpointError(f'{filename}: unreadable ({_first_line(unsafe_err)})') from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise CheckpointError(f'{filename}: truncated or corrupt checkpoint ({type(err).__name__}: '
                              f'{_first_line(err)})') from None
    if isinstance(ckpt, dict) and ckpt.get('optimizer_state') is not None:
        ckpt['optimizer_state'] = sanitize_optimizer_state(ckpt['optimizer_state'])
    return ckpt


def model_state_of(checkpoint, filename, key='model_state'):
    """The state dict ``checkpoint[key]`` (or the checkpoint itself if it is a bare state dict), without a DDP
    ``module.`` prefix. ``CheckpointError`` when there is none."""
    if isinstance(checkpoint, dict) and key in checkpoint and isinstance(checkpoint[key], dict):
        return strip_ddp_prefix(checkpoint[key])
    if key == 'model_state' and isinstance(checkpoint, dict) and checkpoint \
            and all(torch.is_tensor(v) for v in checkpoint.values()):
        return strip_ddp_prefix(checkpoint)
    found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise CheckpointError(f'{filename}: not a model checkpoint: no "{key}" state dict (found {found})')


def match_checkpoint(module, state, what):
    """``StateDictMatch`` of ``state`` against ``module``; ``CheckpointMismatchError`` unless exact."""
    match = StateDictMatch(module, state)
    if not match.exact:
        raise CheckpointMismatchError(match.describe(what))
    return match


def apply_match(module, match):
    """Load the fitting tensors of ``match`` into ``module`` (the rest keeps its current values)."""
    merged = dict(match.model_state)
    merged.update(match.fitting)
    module.load_state_dict(merged, strict=True)


def load_model_state(model, filename, strict=True, logger=None, map_location='cpu', allow_unsafe=False,
                     checkpoint=None):
    """Load the ``model_state`` of ``filename`` into ``model`` (a detector or any module).

    strict=True (evaluation, teacher, resume): every key and shape must match, else ``CheckpointMismatchError``
    listing the differences and nothing is loaded. strict=False (``--pretrained_model``): the tensors that fit are
    loaded, every key that was not is logged. spconv weight layouts are converted either way.

    Returns:
        ``StateDictMatch`` (``.fitting``: the loaded tensors, ``.model_state``: the model's keys).
    """
    ckpt = checkpoint if checkpoint is not None else load_checkpoint(filename, map_location, allow_unsafe, logger)
    state = model_state_of(ckpt, filename)
    what = f'{filename}: model_state'
    match = match_checkpoint(model, state, what) if strict else StateDictMatch(model, state)
    if not strict and logger is not None and not match.exact:
        logger.warning(match.describe(what).replace('\n', ';'))
    apply_match(model, match)
    return match


def load_params_with_optimizer(model, filename, optimizer=None, logger=None, map_location='cpu', batch_size=None,
                               allow_unsafe=False):
    """Resume: strictly load model (+ adapters for a Distiller) and optimizer state; return ``(it, epoch)``.

    Works on a plain detector, a Distiller, or either wrapped in DDP. Legacy OpenPCDet checkpoints load too
    (keys identical); a missing ``optimizer_state`` is logged and skipped. ``batch_size`` (the run's total):
    a checkpoint written with another one raises ``ResumeMismatchError`` (its ``it`` counts other steps).
    Every check runs before anything is loaded: on an error the model and optimizer are unchanged.
    """
    ckpt = load_checkpoint(filename, map_location=map_location, allow_unsafe=allow_unsafe, logger=logger)
    stored_batch = ckpt.get('batch_size') if isinstance(ckpt, dict) else None
    if batch_size is not None and stored_batch is not None and int(stored_batch) != int(batch_size):
        raise ResumeMismatchError(
            f'{filename}: written with a total batch size of {stored_batch}, this run has {batch_size}: its '
            f'iteration count ({ckpt.get("it")}) would map to other epochs; resume with --batch_size '
            f'{stored_batch}, or start over with --fresh_start')
    core = unwrap_model(model)
    if logger is not None:
        logger.info('==> Loading parameters from checkpoint %s to %s', filename, map_location)
    detector = core.student if hasattr(core, 'student') else core
    plan = [(detector, match_checkpoint(detector, model_state_of(ckpt, filename), f'{filename}: model_state'))]
    losses = getattr(core, 'losses', None) if hasattr(core, 'student') else None
    if losses is not None and len(list(losses.parameters())) > 0:
        if 'distill_state' not in ckpt:
            raise CheckpointMismatchError(f'{filename}: resuming a distillation needs "distill_state" (adapters), '
                                          'the checkpoint has none')
        plan.append((losses, match_checkpoint(losses, model_state_of(ckpt, filename, 'distill_state'),
                                                f'{filename}: distill_state')))
    optim_state = ckpt.get('optimizer_state') if optimizer is not None else None
    if optim_state is not None:
        _check_optimizer_state(optimizer, optim_state, filename)
    for module, match in plan:
        apply_match(module, match)
    if optim_state is not None:
        if logger is not None:
            logger.info('==> Loading optimizer parameters from checkpoint %s', filename)
        optimizer.load_state_dict(optim_state)
    elif optimizer is not None and logger is not None:
        logger.info('==> %s has no optimizer state: optimizer starts fresh', filename)
    epoch = int(ckpt['epoch']) if ckpt.get('epoch') is not None else -1
    it = int(ckpt['it']) if ckpt.get('it') is not None else 0
    if logger is not None:
        logger.info('==> Done (epoch %d, it %d, version %s)', epoch, it, ckpt.get('version', 'none'))
    return it, epoch


def _check_optimizer_state(optimizer, optim_state, filename):
    """The stored optimizer state has the optimizer's parameter groups and sizes (what ``load_state_dict``
    checks, here before any model tensor is touched)."""
    own = optimizer.state_dict()['param_groups']
    stored = optim_state.get('param_groups', []) if isinstance(optim_state, dict) else None
    if stored is None or [len(g['params']) for g in own] != [len(g.get('params', [])) for g in stored]:
        sizes = None if stored is None else [len(g.get('params', [])) for g in stored]
        raise CheckpointMismatchError(f'{filename}: optimizer_state has parameter groups of sizes {sizes}, the '
                                      f'optimizer {[len(g["params"]) for g in own]}')
