"""YAML config system, OpenPCDet-compatible (``cfg``, ``cfg_from_yaml_file``, ``cfg_from_list``, ...).

Differences from OpenPCDet, all of them so that configs load from any working directory:

- ``_BASE_CONFIG_`` paths are resolved relative to the file that contains them first, then the current
  working directory, then ``ROOT_DIR/tools`` (where OpenPCDet's ``cfgs/...`` paths point).
- A base file may itself have bases (resolved relative to the base file); a cycle of bases is an error.
- Every error names the file and the config key.

Merging is OpenPCDet's: at the level where ``_BASE_CONFIG_`` appears, the (fully resolved) base dict is
loaded and ``update``d into that level, then the including dict's own keys are merged on top: dicts key by
key, lists and scalars replaced wholesale. The ``_BASE_CONFIG_`` key itself stays in the result.
"""
import difflib
import logging
import os
from ast import literal_eval
from pathlib import Path

import yaml
from easydict import EasyDict

BASE_KEY = '_BASE_CONFIG_'


class ConfigKeyError(KeyError):
    """A ``--set`` key that does not exist in the config."""

    def __str__(self):  # KeyError would print the message inside quotes
        return str(self.args[0])


class ConfigTypeError(TypeError):
    """A ``--set`` value whose type does not match the existing value."""


def _repo_root():
    return Path(__file__).resolve().parent.parent


def _load_yaml(path):
    """Read one YAML file into a plain dict; errors name the file."""
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ValueError(f'{path}: invalid YAML: {exc}') from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: a config file must contain a mapping at top level, got {type(data).__name__}')
    return data


def find_config_file(path, referring_dir=None, extra_dirs=(), what='config file'):
    """Absolute path of a config file; the one resolver for ``--cfg_file``, ``_BASE_CONFIG_`` and
    ``TEACHER.CFG_FILE``.

    An absolute path is taken as it is. A relative one is tried, in order, relative to ``referring_dir`` (the
    directory of the file that names it), each of ``extra_dirs``, the working directory, the repository root and
    ``ROOT_DIR/tools`` (where OpenPCDet's ``cfgs/...`` paths point), so every command works from the root and from
    ``tools/``. ``FileNotFoundError`` names ``what`` and lists every path tried.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f'{what} must be a file path, got {path!r}')
    path = Path(path).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        dirs = [referring_dir, *extra_dirs, Path.cwd(), _repo_root(), _repo_root() / 'tools']
        candidates = [Path(d) / path for d in dirs if d]
    for cand in candidates:
        if cand.is_file():
            return cand.resolve()
    raise FileNotFoundError(f'{what} {str(path)!r} not found (tried {", ".join(str(c) for c in candidates)})')


def _find_base(base, including_file, key_path):
    """Resolve a ``_BASE_CONFIG_`` value (relative to the including file first, see ``find_config_file``)."""
    referring = Path(including_file).resolve().parent if including_file is not None else None
    return find_config_file(base, referring, what=f'{including_file or "<dict>"}: {key_path} =')


def _merge(config, new_config, including_file, stack, key_prefix):
    """Merge ``new_config`` into ``config`` in place (see module docstring); returns ``config``.

    ``stack`` holds the absolute paths of the files being loaded, for cycle detection; ``key_prefix`` is the
    dotted key of this level, for messages.
    """
    if BASE_KEY in new_config:
        key_path = f'{key_prefix}{BASE_KEY}'
        base_path = _find_base(new_config[BASE_KEY], including_file, key_path)
        if base_path in stack:
            chain = ' -> '.join(str(p) for p in (*stack, base_path))
            raise ValueError(f'{including_file}: {key_path}: cycle of base configs: {chain}')
        base_cfg = _merge(EasyDict(), _load_yaml(base_path), base_path, (*stack, base_path), '')
        config.update(base_cfg)

    for key, val in new_config.items():
        if not isinstance(val, dict):
            config[key] = val
            continue
        if key not in config or not isinstance(config[key], dict):
            config[key] = EasyDict()
        _merge(config[key], val, including_file, stack, f'{key_prefix}{key}.')
    return config


def merge_new_config(config, new_config):
    """Merge dict ``new_config`` into EasyDict ``config`` in place (OpenPCDet semantics) and return it.

    Relative ``_BASE_CONFIG_`` paths in ``new_config`` are resolved from the CWD, then ``ROOT_DIR/tools``.
    """
    return _merge(config, new_config, None, (), '')


def cfg_from_yaml_file(cfg_file, config):
    """Load ``cfg_file`` (with its ``_BASE_CONFIG_`` chain) and merge it into ``config``; returns ``config``."""
    path = Path(cfg_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {cfg_file} (working directory {Path.cwd()})')
    path = path.resolve()
    return _merge(config, _load_yaml(path), path, (path,), '')


def _parse_value(raw, old, key):
    """Convert the command-line string ``raw`` to the type of the existing value ``old`` (OpenPCDet rules).

    - old is a str: the raw string is taken as is.
    - old is None: any literal (or the raw string) is accepted.
    - old is a dict: ``"k:v,k2:v2"`` updates existing sub-keys (each converted by these rules), or a dict
      literal does the same.
    - old is a list: a list literal, or ``"a,b,c"`` whose items take the type of ``old[0]`` (of its first float
      for a numeric list such as ``POINT_CLOUD_RANGE: [0, -40, -3, 70.4, 40, 1]``, so floats are accepted).
    - otherwise the literal must have the same type; an int is accepted for a float.
    """
    if isinstance(old, str):
        return raw
    try:
        value = literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if old is None:
        return value

    if isinstance(old, dict):
        if isinstance(value, dict):
            items = [(str(k), v if isinstance(v, str) else repr(v)) for k, v in value.items()]
        elif isinstance(value, str):
            items = []
            for part in value.split(','):
                if ':' not in part:
                    raise ConfigTypeError(f'--set {key}: {raw!r} is not "k:v,k2:v2" for a dict value')
                sub_key, sub_raw = part.split(':', 1)
                items.append((sub_key.strip(), sub_raw.strip()))
        else:
            raise ConfigTypeError(f'--set {key}: expected a dict ("k:v,k2:v2"), got {type(value).__name__} {raw!r}')
        new = EasyDict(old)
        for sub_key, sub_raw in items:
            if sub_key not in old:
                raise ConfigKeyError(f'--set {key}: sub-key {sub_key!r} does not exist (valid: {sorted(old)})')
            new[sub_key] = _parse_value(sub_raw, old[sub_key], f'{key}.{sub_key}')
        return new

    if isinstance(old, list):
        if isinstance(value, list):
            items = value
        else:
            # "a,b" -> strings; "1,2" -> a tuple from literal_eval; a bare scalar -> one-item list
            items = raw.split(',') if isinstance(value, (str, tuple)) else [raw]
        if not old:
            return [_literal_eval_or_str(x) if isinstance(x, str) else x for x in items]
        template = next((x for x in old if isinstance(x, float)), old[0])
        return [_parse_value(x if isinstance(x, str) else repr(x), template, f'{key}[{i}]')
                for i, x in enumerate(items)]

    if isinstance(old, bool) or isinstance(value, bool):
        ok = type(value) is type(old)
    elif isinstance(old, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = type(value) is type(old)
    if not ok:
        raise ConfigTypeError(f'--set {key}: value {raw!r} has type {type(value).__name__}, '
                              f'the config has {type(old).__name__} ({old!r})')
    return value


def _literal_eval_or_str(raw):
    """``literal_eval(raw)``, or ``raw`` itself when it is not a Python literal."""
    try:
        return literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw.strip()


def cfg_from_list(cfg_list, config):
    """Apply ``--set KEY.SUB value ...`` pairs to ``config`` in place.

    Keys must exist (``ConfigKeyError`` naming the key); values are converted by ``_parse_value``'s rules
    (``ConfigTypeError`` naming the key on a type mismatch).
    """
    if len(cfg_list) % 2 != 0:
        raise ValueError(f'--set needs KEY VALUE pairs, got an odd number of items: {list(cfg_list)}')
    for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
        key_list = full_key.split('.')
        d = config
        for i, sub_key in enumerate(key_list):
            if not isinstance(d, dict) or sub_key not in d:
                where = '.'.join(key_list[:i]) or '<top level>'
                valid = sorted(d) if isinstance(d, dict) else []
                raise ConfigKeyError(f'--set {full_key}: key {sub_key!r} not found under {where} (valid: {valid})')
            if i < len(key_list) - 1:
                d = d[sub_key]
        d[key_list[-1]] = _parse_value(str(raw), d[key_list[-1]], full_key)
    return config


# Keys the code reads, per block. Top level and OPTIMIZATION are fixed sets: an unknown key there is an error.
# DATA_CONFIG and MODEL keys are also read by the dataset / detector builders; an unknown one is reported.
TOP_LEVEL_KEYS = frozenset({BASE_KEY, 'ROOT_DIR', 'RANK', 'LOCAL_RANK', 'TAG', 'EXP_GROUP_PATH', 'CLASS_NAMES',
                            'DATA_CONFIG', 'MODEL', 'OPTIMIZATION', 'TEACHER', 'DISTILL'})
OPTIMIZATION_KEYS = frozenset({
    'BATCH_SIZE_PER_GPU', 'NUM_EPOCHS', 'OPTIMIZER', 'LR', 'WEIGHT_DECAY', 'MOMENTUM', 'MOMS', 'PCT_START',
    'DIV_FACTOR', 'DECAY_STEP_LIST', 'LR_DECAY', 'LR_CLIP', 'LR_WARMUP', 'WARMUP_EPOCH', 'GRAD_NORM_CLIP', 'BETAS',
    'USE_AMP', 'LOSS_SCALE_FP16', 'MAX_NONFINITE_STEPS'})
DATA_CONFIG_KEYS = frozenset({BASE_KEY, 'DATASET', 'DATA_PATH', 'POINT_CLOUD_RANGE', 'DATA_SPLIT', 'INFO_PATH',
                              'GET_ITEM_LIST', 'FOV_POINTS_ONLY', 'DATA_AUGMENTOR', 'POINT_FEATURE_ENCODING',
                              'DATA_PROCESSOR'})
MODEL_KEYS = frozenset({'NAME', 'VFE', 'BACKBONE_3D', 'MAP_TO_BEV', 'PFE', 'BACKBONE_2D', 'DENSE_HEAD', 'POINT_HEAD',
                        'ROI_HEAD', 'POST_PROCESSING'})


class ConfigUnknownKeyError(ConfigKeyError):
    """A config file key that no code reads, in a block whose keys are a fixed set."""


def unknown_key_messages(block, valid, where):
    """Messages for the keys of ``block`` not in ``valid``, each with the nearest valid key."""
    out = []
    for key in block if isinstance(block, dict) else ():
        if key in valid:
            continue
        near = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
        hint = f'did you mean {near[0]!r}?' if near else f'valid keys: {sorted(valid)}'
        out.append(f'{where}{key!r} is not a key any code reads ({hint})')
    return out


def check_known_keys(block, valid, where, context=''):
    """``ConfigUnknownKeyError`` listing every key of ``block`` not in ``valid`` with its nearest valid key;
    ``context`` (a file, a loss block) starts the message."""
    unknown = unknown_key_messages(block, valid, where)
    if unknown:
        prefix = f'{context}: ' if context else ''
        raise ConfigUnknownKeyError(prefix + '; '.join(unknown))


def check_config_keys(config, cfg_file='<config>'):
    """Unknown keys of a loaded config.

    Raises:
        ConfigUnknownKeyError: an unknown key at the top level or in OPTIMIZATION (typos there silently change
            the training otherwise), naming the file and the nearest valid key.
    Returns:
        list of warning messages for unknown keys directly under DATA_CONFIG and MODEL.
    """
    errors = unknown_key_messages(config, TOP_LEVEL_KEYS, 'top-level key ')
    errors += unknown_key_messages(config.get('OPTIMIZATION'), OPTIMIZATION_KEYS, 'OPTIMIZATION.')
    if errors:
        raise ConfigUnknownKeyError(f'{cfg_file}: ' + '; '.join(errors))
    return (unknown_key_messages(config.get('DATA_CONFIG'), DATA_CONFIG_KEYS, 'DATA_CONFIG.')
            + unknown_key_messages(config.get('MODEL'), MODEL_KEYS, 'MODEL.'))


def log_config_to_file(cfg, pre='cfg', logger=None):
    """Log every leaf of ``cfg`` as ``pre.KEY.SUB: value``, with a header line per sub-dict."""
    logger = logger if logger is not None else logging.getLogger('pcdet')
    for key, val in cfg.items():
        if isinstance(val, dict):
            logger.info('----------- %s -----------', key)
            log_config_to_file(val, pre=f'{pre}.{key}', logger=logger)
            continue
        logger.info('%s.%s: %s', pre, key, val)


def resolve_path(p):
    """Resolve a relative data path the way OpenPCDet's ``../data/kitti`` is meant.

    Absolute paths are returned as they are; a relative path that exists from the CWD is taken from there,
    otherwise it is taken relative to ``ROOT_DIR/tools`` (OpenPCDet's scripts run from ``tools/``).
    Returns an absolute ``Path`` (which may not exist; callers report that).
    """
    path = Path(p).expanduser()
    if path.is_absolute():
        return path
    if path.exists():
        return path.resolve()
    return (Path(cfg.ROOT_DIR) / 'tools' / path).resolve()


cfg = EasyDict()
cfg.ROOT_DIR = _repo_root()
cfg.RANK = 0           # global process rank (what gates rank-0 logging and checkpoints)
cfg.LOCAL_RANK = 0     # OpenPCDet's name for the same value (its scripts set it to the global rank too)
