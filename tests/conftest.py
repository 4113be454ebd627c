"""Shared pytest fixtures: the real KITTI sample frames and a temporary KITTI root built from them.

The samples live outside the repository, in ``<shared>/data/kitti_samples`` (13 real frames), where ``<shared>`` is
``$PCDET_SHARED_DIR``, ``<repo>/../shared`` or, in a clone of a local checkout, ``<origin>/../shared``; tests never
write there. The OpenPCDet state_dict reference is
``<shared>/spec/openpcdet_state_dicts.json``. When a file is absent the tests that need it are skipped with the
reason.
"""
import os
import subprocess
import tempfile
from pathlib import Path

# before torch / numba load (see tools/_init_path.py): the tests' processes and the tools they start
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def _find_shared_dir():
    """``$PCDET_SHARED_DIR``, else ``<repo>/../shared``, else ``<origin>/../shared`` for a clone of a local checkout
    (CI clones the working repository into a temporary folder)."""
    if os.environ.get('PCDET_SHARED_DIR'):
        return Path(os.environ['PCDET_SHARED_DIR']).resolve()
    candidates = [REPO_ROOT.parent / 'shared']
    try:
        origin = subprocess.run(['git', 'config', '--get', 'remote.origin.url'], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ''
    if origin and '://' not in origin and ':' not in origin.split('/')[0]:   # a local path, not a URL
        candidates.append(Path(origin).expanduser().resolve().parent / 'shared')
    return next((c.resolve() for c in candidates if c.is_dir()), candidates[0].resolve())


SHARED_DIR = _find_shared_dir()
KITTI_SAMPLES = SHARED_DIR / 'data' / 'kitti_samples'
STATE_DICT_SPEC = SHARED_DIR / 'spec' / 'openpcdet_state_dicts.json'

# numba caches compiled kernels next to the source by default; point it at a writable tmp dir instead
# (only when the user has not chosen one).
if 'NUMBA_CACHE_DIR' not in os.environ:
    os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='pcdet_numba_cache_')


@pytest.fixture(scope='session')
def kitti_samples_dir():
    """Read-only real KITTI samples: ``training/{velodyne,calib,label_2,image_2,planes}``, ``ImageSets``."""
    if not (KITTI_SAMPLES / 'training' / 'calib').is_dir():
        pytest.skip(f'KITTI sample frames not found at {KITTI_SAMPLES} (set PCDET_SHARED_DIR or use '
                    '<repo>/../shared)')
    return KITTI_SAMPLES


@pytest.fixture(scope='session')
def openpcdet_state_dicts():
    """OpenPCDet v0.6's state_dict names and shapes per model: ``{'pointpillar': [[name, shape], ...], ...}``."""
    import json
    if not STATE_DICT_SPEC.is_file():
        pytest.skip(f'OpenPCDet state_dict reference not found at {STATE_DICT_SPEC} (set PCDET_SHARED_DIR)')
    return json.loads(STATE_DICT_SPEC.read_text())


@pytest.fixture
def tmp_kitti_root(tmp_path, kitti_samples_dir):
    """A writable KITTI root in a tmp dir: ``training/`` and ``ImageSets/`` are symlinks to the samples.

    Infos, GT databases etc. can be written next to them without touching the shared samples.
    """
    root = tmp_path / 'kitti'
    root.mkdir()
    for name in ('training', 'ImageSets'):
        (root / name).symlink_to(kitti_samples_dir / name, target_is_directory=True)
    return root


@pytest.fixture(scope='session')
def kitti_infos_root(tmp_path_factory, kitti_samples_dir):
    """A tmp KITTI root (symlinks to the 13 samples) with infos and GT database made by the project's CLI, once per
    session; tests read it and write elsewhere."""
    import sys
    tmp = tmp_path_factory.mktemp('kitti_infos')
    root = tmp / 'kitti'
    root.mkdir()
    for name in ('training', 'ImageSets'):
        (root / name).symlink_to(kitti_samples_dir / name, target_is_directory=True)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, '-m', 'pcdet.datasets.kitti.kitti_dataset', 'create_kitti_infos',
                    str(REPO_ROOT / 'tools/cfgs/dataset_configs/kitti_dataset.yaml'), '--data_path', str(root),
                    '--workers', '1'], cwd=REPO_ROOT, check=True, env=env, capture_output=True)
    assert (root / 'kitti_infos_train.pkl').is_file()
    return root


def tiny_kitti_config(base_cfg, data_root, point_cloud_range=(0, -19.84, -3, 34.56, 19.84, 1)):
    """YAML text of a tiny experiment on the sample frames: ``base_cfg`` with ``DATA_PATH`` = ``data_root``, half
    KITTI's x/y range (216 x 248 pillars on the 0.16 m grid) and no GT sampling (9 training frames cannot feed it).
    SECOND's 0.05 m grid needs ``(0, -20, -3, 35.2, 20, 1)``."""
    return (f'_BASE_CONFIG_: {base_cfg}\nDATA_CONFIG:\n  DATA_PATH: {data_root}\n'
            f'  POINT_CLOUD_RANGE: {list(point_cloud_range)}\n'
            "  DATA_AUGMENTOR:\n    DISABLE_AUG_LIST: ['gt_sampling']\n")


@pytest.fixture(scope='session')
def tiny_config_text():
    """``tiny_kitti_config`` for tests (a fixture, so test modules need not import conftest)."""
    return tiny_kitti_config


@pytest.fixture
def extra_tag(request):
    """A fresh ``--extra_tag``; afterwards its run folder under the test module's ``OUTPUT_GROUP``
    (``<repo>/output/<group>/<cfg stem>``) is removed, and the group folders too when nothing else is in them."""
    import shutil
    import uuid
    tag = 'pytest_' + uuid.uuid4().hex[:8]
    yield tag
    group = Path(request.module.OUTPUT_GROUP)
    shutil.rmtree(group / tag, ignore_errors=True)
    for d in (group, group.parent):  # only when empty: other runs may share them
        try:
            d.rmdir()
        except OSError:
            pass
