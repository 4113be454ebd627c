"""Config system (pcdet/config.py) and packaging checks (import side effects, setup.py, build_utils)."""
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from easydict import EasyDict

from pcdet.config import (ConfigKeyError, ConfigTypeError, cfg, cfg_from_list, cfg_from_yaml_file,
                          log_config_to_file, merge_new_config, resolve_path)

REPO_ROOT = Path(__file__).resolve().parent.parent


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cfg_tree(tmp_path):
    """tools/cfgs-like tree: a dataset config, a model including it at DATA_CONFIG level, a child of the model."""
    root = tmp_path / 'cfgs'
    write(root / 'dataset_configs' / 'base_dataset.yaml', """
        DATA_PATH: ../data/kitti
        POINT_CLOUD_RANGE: [0, -40, -3, 70.4, 40, 1]
        DATA_SPLIT: {train: train, test: val}
    """)
    write(root / 'dataset_configs' / 'kitti.yaml', """
        _BASE_CONFIG_: base_dataset.yaml
        DATASET: KittiDataset
        DATA_AUGMENTOR:
            AUG_CONFIG_LIST:
                - NAME: random_world_flip
                  ALONG_AXIS_LIST: [x]
                - NAME: random_world_scaling
                  WORLD_SCALE_RANGE: [0.95, 1.05]
        DATA_PROCESSOR:
            - NAME: shuffle_points
    """)
    write(root / 'models' / 'pointpillar.yaml', """
        CLASS_NAMES: [Car, Pedestrian, Cyclist]
        DATA_CONFIG:
            _BASE_CONFIG_: ../dataset_configs/kitti.yaml
            POINT_CLOUD_RANGE: [0, -39.68, -3, 69.12, 39.68, 1]
            DATA_SPLIT: {test: test}
            DATA_AUGMENTOR:
                AUG_CONFIG_LIST:
                    - NAME: random_world_flip
                      ALONG_AXIS_LIST: [x, y]
        OPTIMIZATION:
            LR: 0.003
            NUM_EPOCHS: 80
            USE_AMP: False
            DECAY_STEP_LIST: [35, 45]
            MOMS: [0.95, 0.85]
            OPTIMIZER: adam_onecycle
            NMS: {TRAIN: 0.8, TEST: 0.85}
        TEACHER:
            CKPT: null
    """)
    write(root / 'models' / 'pointpillar_4x.yaml', """
        _BASE_CONFIG_: pointpillar.yaml
        OPTIMIZATION:
            LR: 0.001
    """)
    return root


def test_base_inheritance_from_another_cwd(cfg_tree, tmp_path, monkeypatch):
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = cfg_from_yaml_file(str(cfg_tree / 'models' / 'pointpillar.yaml'), EasyDict())
    data = config.DATA_CONFIG
    # child scalars / lists replace the base's wholesale
    assert data.POINT_CLOUD_RANGE == [0, -39.68, -3, 69.12, 39.68, 1]
    assert data.DATA_AUGMENTOR.AUG_CONFIG_LIST == [{'NAME': 'random_world_flip', 'ALONG_AXIS_LIST': ['x', 'y']}]
    # dicts merge key by key: train from the (nested) base, test from the child
    assert data.DATA_SPLIT == {'train': 'train', 'test': 'test'}
    # values of the base's base, resolved relative to the base file, not the CWD
    assert data.DATA_PATH == '../data/kitti'
    assert data.DATASET == 'KittiDataset'
    assert data.DATA_PROCESSOR == [{'NAME': 'shuffle_points'}]
    # the key stays, with the value as written (OpenPCDet behaviour)
    assert data._BASE_CONFIG_ == '../dataset_configs/kitti.yaml'
    assert isinstance(data.DATA_AUGMENTOR, EasyDict)


def test_top_level_base_chain(cfg_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = cfg_from_yaml_file(cfg_tree / 'models' / 'pointpillar_4x.yaml', EasyDict())
    assert config.OPTIMIZATION.LR == 0.001
    assert config.OPTIMIZATION.NUM_EPOCHS == 80  # from the base, merged by key
    assert config.CLASS_NAMES == ['Car', 'Pedestrian', 'Cyclist']
    assert config.DATA_CONFIG.DATA_SPLIT.train == 'train'  # base of base of base
    assert config._BASE_CONFIG_ == 'pointpillar.yaml'


def test_base_falls_back_to_cwd(tmp_path, monkeypatch):
    write(tmp_path / 'shared' / 'common.yaml', 'A: 1\nB: {x: 1, y: 2}\n')
    child = write(tmp_path / 'exp' / 'child.yaml', '_BASE_CONFIG_: shared/common.yaml\nB: {y: 3}\n')
    monkeypatch.chdir(tmp_path)  # shared/common.yaml is not next to child.yaml, only under the CWD
    config = cfg_from_yaml_file(child, EasyDict())
    assert config.A == 1 and config.B == {'x': 1, 'y': 3}


def test_base_prefers_including_file_over_cwd(tmp_path, monkeypatch):
    write(tmp_path / 'exp' / 'base.yaml', 'WHO: next_to_file\n')
    write(tmp_path / 'base.yaml', 'WHO: cwd\n')
    child = write(tmp_path / 'exp' / 'child.yaml', '_BASE_CONFIG_: base.yaml\n')
    monkeypatch.chdir(tmp_path)
    assert cfg_from_yaml_file(child, EasyDict()).WHO == 'next_to_file'


def test_missing_base_names_file_and_key(tmp_path, monkeypatch):
    child = write(tmp_path / 'child.yaml', 'MODEL:\n  _BASE_CONFIG_: nowhere/missing.yaml\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        cfg_from_yaml_file(child, EasyDict())
    message = str(info.value)
    assert str(child) in message and 'MODEL._BASE_CONFIG_' in message and 'nowhere/missing.yaml' in message


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such.yaml'):
        cfg_from_yaml_file(tmp_path / 'no_such.yaml', EasyDict())


def test_cycle_of_bases(tmp_path):
    a = write(tmp_path / 'a.yaml', '_BASE_CONFIG_: sub/b.yaml\nX: 1\n')
    write(tmp_path / 'sub' / 'b.yaml', 'DATA:\n  _BASE_CONFIG_: ../a.yaml\n')
    with pytest.raises(ValueError, match='cycle') as info:
        cfg_from_yaml_file(a, EasyDict())
    assert 'b.yaml' in str(info.value) and 'DATA._BASE_CONFIG_' in str(info.value)


def test_self_include_is_a_cycle(tmp_path):
    a = write(tmp_path / 'a.yaml', '_BASE_CONFIG_: a.yaml\n')
    with pytest.raises(ValueError, match='cycle'):
        cfg_from_yaml_file(a, EasyDict())


def test_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path / 'common.yaml', 'V: 1\n')
    write(tmp_path / 'left.yaml', '_BASE_CONFIG_: common.yaml\n')
    top = write(tmp_path / 'top.yaml', '_BASE_CONFIG_: left.yaml\nSUB:\n  _BASE_CONFIG_: common.yaml\n')
    config = cfg_from_yaml_file(top, EasyDict())
    assert config.V == 1 and config.SUB.V == 1


def test_invalid_yaml_names_file(tmp_path):
    bad = write(tmp_path / 'bad.yaml', 'A: [1, 2\n')
    with pytest.raises(ValueError, match='bad.yaml'):
        cfg_from_yaml_file(bad, EasyDict())
    not_a_dict = write(tmp_path / 'list.yaml', '- 1\n- 2\n')
    with pytest.raises(ValueError, match='list.yaml'):
        cfg_from_yaml_file(not_a_dict, EasyDict())


def test_merge_new_config_replaces_lists_and_merges_dicts():
    config = EasyDict({'A': {'x': 1, 'y': [1, 2, 3]}, 'L': [1, 2]})
    merge_new_config(config, {'A': {'y': [9]}, 'L': [5], 'N': {'k': 'v'}})
    assert config == {'A': {'x': 1, 'y': [9]}, 'L': [5], 'N': {'k': 'v'}}


@pytest.fixture
def loaded(cfg_tree):
    return cfg_from_yaml_file(cfg_tree / 'models' / 'pointpillar.yaml', EasyDict())


def test_set_overrides_with_types(loaded):
    cfg_from_list([
        'OPTIMIZATION.LR', '0.01',
        'OPTIMIZATION.NUM_EPOCHS', '2',
        'OPTIMIZATION.USE_AMP', 'True',
        'OPTIMIZATION.OPTIMIZER', 'adam',
        'OPTIMIZATION.DECAY_STEP_LIST', '10,20,30',
        'OPTIMIZATION.MOMS', '[0.9, 0.8]',
        'OPTIMIZATION.NMS', 'TEST:0.5',
        'CLASS_NAMES', 'Car,Cyclist',
        'DATA_CONFIG.DATA_SPLIT', "{'train': 'trainval'}",
        'TEACHER.CKPT', '/ckpts/teacher.pth',
    ], loaded)
    opt = loaded.OPTIMIZATION
    assert opt.LR == 0.01 and isinstance(opt.LR, float)
    assert opt.NUM_EPOCHS == 2 and isinstance(opt.NUM_EPOCHS, int)
    assert opt.USE_AMP is True
    assert opt.OPTIMIZER == 'adam'
    assert opt.DECAY_STEP_LIST == [10, 20, 30]
    assert opt.MOMS == [0.9, 0.8]
    assert opt.NMS == {'TRAIN': 0.8, 'TEST': 0.5}
    assert loaded.CLASS_NAMES == ['Car', 'Cyclist']
    assert loaded.DATA_CONFIG.DATA_SPLIT == {'train': 'trainval', 'test': 'test'}
    assert loaded.TEACHER.CKPT == '/ckpts/teacher.pth'


def test_set_int_promotes_to_float(loaded):
    cfg_from_list(['OPTIMIZATION.LR', '1'], loaded)
    assert loaded.OPTIMIZATION.LR == 1.0 and isinstance(loaded.OPTIMIZATION.LR, float)


def test_set_numeric_list_whose_first_item_is_an_int_takes_floats(loaded):
    key = 'DATA_CONFIG.POINT_CLOUD_RANGE'
    assert isinstance(loaded.DATA_CONFIG.POINT_CLOUD_RANGE[0], int)    # [0, -40, ...]: OpenPCDet typed it int
    cfg_from_list([key, '0,-19.84,-3,39.68,19.84,1'], loaded)
    assert loaded.DATA_CONFIG.POINT_CLOUD_RANGE == [0.0, -19.84, -3.0, 39.68, 19.84, 1.0]
    with pytest.raises(ConfigTypeError, match='POINT_CLOUD_RANGE'):
        cfg_from_list([key, '0,a,-3,39.68,19.84,1'], loaded)


@pytest.mark.parametrize('key', ['OPTIMIZATION.NO_SUCH', 'NO_SUCH.LR', 'OPTIMIZATION.LR.DEEPER'])
def test_set_unknown_key(loaded, key):
    with pytest.raises(ConfigKeyError) as info:
        cfg_from_list([key, '1'], loaded)
    assert key in str(info.value)


@pytest.mark.parametrize('key, value', [
    ('OPTIMIZATION.NUM_EPOCHS', '2.5'),      # float for int
    ('OPTIMIZATION.USE_AMP', '1'),           # int for bool
    ('OPTIMIZATION.LR', 'fast'),             # str for float
    ('OPTIMIZATION.DECAY_STEP_LIST', 'a,b'),  # str items for an int list
    ('OPTIMIZATION.NMS', 'TEST:high'),       # str for a float sub-key
    ('OPTIMIZATION.NMS', '5'),               # int for a dict
])
def test_set_wrong_type(loaded, key, value):
    with pytest.raises(ConfigTypeError) as info:
        cfg_from_list([key, value], loaded)
    assert key in str(info.value)


def test_set_unknown_dict_sub_key(loaded):
    with pytest.raises(ConfigKeyError, match='OPTIMIZATION.NMS.*VAL'):
        cfg_from_list(['OPTIMIZATION.NMS', 'VAL:0.1'], loaded)


def test_set_odd_number_of_items(loaded):
    with pytest.raises(ValueError, match='pairs'):
        cfg_from_list(['OPTIMIZATION.LR'], loaded)


def test_log_config_to_file(loaded):
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger('test_log_config_to_file')
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    log_config_to_file(loaded, logger=logger)
    assert 'cfg.OPTIMIZATION.LR: 0.003' in records
    assert 'cfg.DATA_CONFIG.DATA_SPLIT.train: train' in records
    assert '----------- OPTIMIZATION -----------' in records


def test_global_cfg_and_resolve_path(tmp_path, monkeypatch):
    assert Path(cfg.ROOT_DIR) == REPO_ROOT and (Path(cfg.ROOT_DIR) / 'setup.py').is_file()
    assert cfg.LOCAL_RANK == 0 and cfg.RANK == 0
    (tmp_path / 'here').mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_path('here') == tmp_path / 'here'
    # not under the CWD: relative to ROOT_DIR/tools, as OpenPCDet's ../data/kitti from tools/
    assert resolve_path('../data/kitti') == REPO_ROOT / 'data' / 'kitti'
    assert resolve_path(tmp_path / 'abs') == tmp_path / 'abs'


REPO_CFGS = sorted((REPO_ROOT / 'tools' / 'cfgs').glob('**/*.yaml'))


@pytest.mark.parametrize('path', REPO_CFGS, ids=[str(p.relative_to(REPO_ROOT / 'tools' / 'cfgs')) for p in REPO_CFGS])
def test_repo_configs_load_from_any_cwd(path, tmp_path, monkeypatch):
    """Every shipped config (and its base chain) loads with a working directory outside the repository."""
    monkeypatch.chdir(tmp_path)
    config = cfg_from_yaml_file(path, EasyDict())
    assert isinstance(config, EasyDict) and config


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=120)


def test_import_pcdet_has_no_heavy_side_effects():
    result = run_python(
        'import sys, pcdet, pcdet.config\n'
        'assert pcdet.__version__\n'
        "heavy = [m for m in ('torch', 'spconv', 'numba') if m in sys.modules]\n"
        'assert not heavy, heavy\n'
        'import pcdet.utils.box_utils, pcdet.utils.calibration_kitti, pcdet.utils.object3d_kitti\n'
        'import pcdet.utils.spconv_utils, pcdet.ops.build_utils\n'
        "assert 'spconv' not in sys.modules\n")
    assert result.returncode == 0, result.stderr


def test_setup_version_and_build_switch():
    from pcdet import __version__

    setup = str(REPO_ROOT / 'setup.py')
    ok = subprocess.run([sys.executable, setup, '--version'], capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'PCDET_BUILD_CUDA': '0'})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == __version__
    bad = subprocess.run([sys.executable, setup, '--version'], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'PCDET_BUILD_CUDA': 'maybe'})
    # setup.py stops with SystemExit(message): exit status 1, the message on stderr
    assert bad.returncode == 1 and "PCDET_BUILD_CUDA='maybe': expected one of auto, 1, 0" in bad.stderr


def test_load_cuda_ext_missing_explains_build():
    from pcdet.ops.build_utils import load_cuda_ext

    with pytest.raises(ImportError, match='PCDET_BUILD_CUDA=1'):
        load_cuda_ext('no_such_op')
