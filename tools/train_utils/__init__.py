"""Training utilities for tools/train.py (loop, optimizers, schedules) and the CLI helpers train.py and
test.py share: OpenPCDet's common flags, config-path resolution, device choice and process-group setup."""
from pathlib import Path


def add_common_args(parser, max_waiting_mins):
    """Flags train.py and test.py share (OpenPCDet names and defaults) plus ``--device``."""
    parser.add_argument('--cfg_file', type=str, default=None, required=True, help='config file')
    parser.add_argument('--batch_size', type=int, default=None,
                        help='TOTAL batch size over all processes (default BATCH_SIZE_PER_GPU per process)')
    parser.add_argument('--workers', type=int, default=4, help='dataloader workers per process')
    parser.add_argument('--extra_tag', type=str, default='default', help='extra tag for this experiment')
    parser.add_argument('--ckpt', type=str, default=None, help='checkpoint to start from')
    parser.add_argument('--pretrained_model', type=str, default=None, help='pretrained weights (non-strict)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--tcp_port', type=int, default=18888, help='tcp port for distributed training (slurm)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help='local rank (default: env LOCAL_RANK, set by torchrun)')
    parser.add_argument('--max_waiting_mins', type=int, default=max_waiting_mins, help='max waiting minutes')
    parser.add_argument('--start_epoch', type=int, default=0)
    parser.add_argument('--save_to_file', action='store_true', default=False, help='write final_result/data')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='auto: CUDA if available, else CPU')
    parser.add_argument('--unsafe_load', action='store_true', default=False,
                        help='read checkpoints that need more than weights and numpy scalars with the full '
                             'unpickler (can run code from the file: only for files you trust)')


def parse_args_and_config(parser, argv, cfg):
    """Add ``--set`` (last: it takes the rest of the line), parse, load ``--cfg_file`` into ``cfg`` and apply the
    overrides. Returns ``(args, cfg)``."""
    import argparse

    from pcdet.config import cfg_from_list, cfg_from_yaml_file, check_config_keys
    parser.add_argument('--set', dest='set_cfgs', default=None, nargs=argparse.REMAINDER,
                        help='set extra config keys if needed')
    args = parser.parse_args(argv)
    args.cfg_file = resolve_cfg_file(args.cfg_file)
    cfg_from_yaml_file(args.cfg_file, cfg)
    if args.set_cfgs is not None:
        cfg_from_list(args.set_cfgs, cfg)
    check_config_keys(cfg, args.cfg_file)
    return args, cfg


def start_run_log(log_file, args, cfg, device, world_size):
    """Rank-0 logger writing to ``log_file``, started with the device, the flags and the resolved config."""
    from pcdet.config import check_config_keys, log_config_to_file
    from pcdet.utils import common_utils
    logger = common_utils.create_logger(log_file, rank=cfg.RANK)
    logger.info('**********************Start logging**********************')
    logger.info('device %s, world size %d, total batch size %d', device, world_size, world_size * args.batch_size)
    for key, val in vars(args).items():
        logger.info('{:16} {}'.format(key, val))
    log_config_to_file(cfg, logger=logger)
    for message in check_config_keys(cfg, args.cfg_file):
        logger.warning('%s: %s', args.cfg_file, message)
    return logger


def user_error_types():
    """Exceptions that mean bad input (a file, a flag, a config key) rather than a bug: the tools print their
    one-line message and exit with status 2 instead of a traceback."""
    from pcdet.config import ConfigKeyError, ConfigTypeError
    from pcdet.utils.checkpoint_utils import CheckpointError
    from train_utils.train_utils import NonFiniteTrainingError
    return (CheckpointError, ConfigKeyError, ConfigTypeError, FileNotFoundError, ResumeError,
            NonFiniteTrainingError)


class ResumeError(RuntimeError):
    """Checkpoints exist in the output folder and none can continue this run."""


def run_tool(main, argv=None):
    """Run a tool's ``main``; a user error (``user_error_types``) becomes ``<tool>: error: <message>`` on stderr
    and exit status 2. ``PCDET_TRACEBACK=1`` shows the traceback instead."""
    import os
    import sys
    try:
        return main(argv)
    except user_error_types() as err:
        if os.environ.get('PCDET_TRACEBACK'):
            raise
        tool = os.path.basename(sys.argv[0]) or 'pcdet'
        print(f'{tool}: error: {err}', file=sys.stderr)
        raise SystemExit(2) from None


def resolve_cfg_file(cfg_file):
    """Absolute ``--cfg_file`` path (``pcdet.config.find_config_file``: the CWD, the repo root, ``tools/``)."""
    from pcdet.config import find_config_file
    return str(find_config_file(cfg_file, what='--cfg_file'))


def exp_group_path(cfg_file):
    """``EXP_GROUP_PATH``: the config's folder relative to ``tools/cfgs`` (e.g. ``kitti_models``), else the
    folder's own name (configs outside the repo)."""
    cfgs_root = Path(__file__).resolve().parents[1] / 'cfgs'
    parent = Path(cfg_file).resolve().parent
    try:
        rel = parent.relative_to(cfgs_root)
        return rel.as_posix() if str(rel) != '.' else 'cfgs'
    except ValueError:
        return parent.name


def setup_cfg_and_dist(args, cfg):
    """Set ``cfg.TAG``, ``cfg.EXP_GROUP_PATH``, initialise torch.distributed for ``--launcher``.

    Sets ``cfg.RANK`` to the global rank (what gates rank-0 logging and checkpoints) and ``cfg.LOCAL_RANK``, the
    name OpenPCDet uses for that same global rank, to it too. Returns
    ``(is_distributed, world_size)``.
    """
    from pcdet.utils import dist_utils
    cfg.TAG = Path(args.cfg_file).stem
    cfg.EXP_GROUP_PATH = exp_group_path(args.cfg_file)
    if args.launcher == 'none':
        cfg.RANK = cfg.LOCAL_RANK = 0
        return False, 1
    backend = 'gloo' if args.device == 'cpu' else 'auto'
    if args.launcher == 'pytorch':
        world_size, local_rank = dist_utils.init_dist_pytorch(args.tcp_port, args.local_rank, backend=backend)
    else:
        world_size, local_rank = dist_utils.init_dist_slurm(args.tcp_port, args.local_rank, backend=backend)
    args.local_rank = local_rank
    cfg.RANK = cfg.LOCAL_RANK = dist_utils.get_dist_info()[0]
    return True, world_size


def select_device(device_flag):
    """``torch.device`` for ``--device``: auto = CUDA (the process's GPU) if available, else CPU."""
    import torch
    if device_flag == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda: CUDA is not available on this machine (use --device cpu or auto)')
    if device_flag == 'cpu' or not torch.cuda.is_available():
        return torch.device('cpu')
    idx = torch.cuda.current_device() if torch.distributed.is_initialized() else 0
    return torch.device('cuda', idx)
