"""Bad input gives clear errors naming the file (and line); an empty point cloud gives a valid sample.

Each test builds a small KITTI root in tmp: the real sample sub-directories are symlinked, the directory that
holds the broken file is a real directory of per-file symlinks plus the broken file.
"""
import pickle
from pathlib import Path

import numpy as np
import pytest
from easydict import EasyDict

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets.kitti.kitti_dataset import KittiDataset, create_kitti_infos
from pcdet.datasets.processor.data_processor import DataProcessor

REPO = Path(__file__).resolve().parent.parent
CFG_FILE = REPO / 'tools' / 'cfgs' / 'dataset_configs' / 'kitti_dataset.yaml'
CLASSES = ['Car', 'Pedestrian', 'Cyclist']
SUBDIRS = ('velodyne', 'calib', 'label_2', 'image_2', 'planes')


def pillar_cfg():
    cfg = cfg_from_yaml_file(str(CFG_FILE), EasyDict())
    cfg.POINT_CLOUD_RANGE = [0, -39.68, -3, 69.12, 39.68, 1]
    cfg.DATA_PROCESSOR[2].VOXEL_SIZE, cfg.DATA_PROCESSOR[2].MAX_POINTS_PER_VOXEL = [0.16, 0.16, 4], 32
    return cfg


def build_root(tmp_path, samples, real_dir):
    """KITTI root whose ``training/<real_dir>`` is a writable directory of symlinks."""
    root = tmp_path / 'kitti'
    (root / 'training').mkdir(parents=True)
    (root / 'ImageSets').symlink_to(samples / 'ImageSets', target_is_directory=True)
    for sub in SUBDIRS:
        src = samples / 'training' / sub
        if sub == real_dir:
            (root / 'training' / sub).mkdir()
            for f in src.iterdir():
                (root / 'training' / sub / f.name).symlink_to(f)
        else:
            (root / 'training' / sub).symlink_to(src, target_is_directory=True)
    return root


def replace(path, data):
    path.unlink()
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)


def test_bin_size_not_multiple_of_16(tmp_path, kitti_samples_dir):
    root = build_root(tmp_path, kitti_samples_dir, 'velodyne')
    bad = root / 'training' / 'velodyne' / '000001.bin'
    replace(bad, np.arange(4 * 10 + 2, dtype=np.float32).tobytes()[:-2])  # 166 bytes
    with pytest.raises(ValueError, match=r'000001\.bin.*not a multiple of 16'):
        create_kitti_infos(pillar_cfg(), CLASSES, root, root, workers=1)
    ds = KittiDataset(pillar_cfg(), CLASSES, training=False, root_path=root)
    with pytest.raises(ValueError, match=str(bad)):
        ds.get_lidar('000001')


def test_label_line_with_wrong_field_count(tmp_path, kitti_samples_dir):
    root = build_root(tmp_path, kitti_samples_dir, 'label_2')
    label = root / 'training' / 'label_2' / '000002.txt'
    lines = label.read_text().splitlines()
    lines[1] = ' '.join(lines[1].split()[:12])  # line 2 loses its last three fields
    replace(label, '\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match=r'000002\.txt:2.*15 fields'):
        create_kitti_infos(pillar_cfg(), CLASSES, root, root, workers=1)


def test_missing_calib_file(tmp_path, kitti_samples_dir):
    root = build_root(tmp_path, kitti_samples_dir, 'calib')
    (root / 'training' / 'calib' / '000003.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r'calib/000003\.txt'):
        create_kitti_infos(pillar_cfg(), CLASSES, root, root, workers=2)


@pytest.mark.parametrize('content, message', [
    (b'this is not a pickle', 'not a readable pickle'),
    (pickle.dumps({'point_cloud': {}}), 'expected a list of info dicts'),
    (pickle.dumps([{'point_cloud': {'lidar_idx': '000000'}}, 'junk']), 'entry 1 is not a KITTI info dict'),
])
def test_info_pkl_that_is_not_one(tmp_path, kitti_samples_dir, content, message):
    root = build_root(tmp_path, kitti_samples_dir, 'calib')
    (root / 'kitti_infos_val.pkl').write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        KittiDataset(pillar_cfg(), CLASSES, training=False, root_path=root)
    assert 'kitti_infos_val.pkl' in str(err.value)


def test_empty_point_cloud_gives_zero_voxels_and_collates(tmp_path, kitti_samples_dir):
    root = build_root(tmp_path, kitti_samples_dir, 'velodyne')
    create_kitti_infos(pillar_cfg(), CLASSES, root, root, workers=1)
    ds = KittiDataset(pillar_cfg(), CLASSES, training=False, root_path=root)
    empty_id = ds.kitti_infos[0]['point_cloud']['lidar_idx']
    replace(root / 'training' / 'velodyne' / f'{empty_id}.bin', b'')
    sample = ds[0]
    assert sample['points'].shape == (0, 4)
    assert sample['voxels'].shape == (0, 32, 4) and sample['voxels'].dtype == np.float32
    assert sample['voxel_coords'].shape == (0, 3) and sample['voxel_coords'].dtype == np.int32
    assert sample['voxel_num_points'].shape == (0,)
    # labels still there: one box per Car / Pedestrian / Cyclist line of the frame's label file
    label = (root / 'training' / 'label_2' / f'{empty_id}.txt').read_text().splitlines()
    n_labelled = sum(line.split()[0] in CLASSES for line in label)
    assert n_labelled > 0 and sample['gt_boxes'].shape == (n_labelled, 8)
    other = ds[1]
    batch = ds.collate_batch([sample, other])
    assert batch['voxels'].shape == other['voxels'].shape and (batch['voxel_coords'][:, 0] == 1).all()
    assert batch['points'].shape == (len(other['points']), 5)
    assert batch['gt_boxes'].shape[0] == 2


def test_sample_points_below_half_the_target():
    cfg = [EasyDict(NAME='sample_points', NUM_POINTS={'train': 1000, 'test': 1000})]
    proc = DataProcessor(cfg, point_cloud_range=[0, -40, -3, 70.4, 40, 1], training=True, num_point_features=4)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 60, size=(300, 4)).astype(np.float32)
    out = proc.forward({'points': pts.copy()})['points']
    assert out.shape == (1000, 4)
    assert set(map(tuple, pts)) == set(map(tuple, out))  # every original point kept, only repeats added
    far = pts.copy()
    far[:, :3] /= 5  # all within 21 m ...
    far[:200, 0] += 100  # ... except the first 200  # 200 far points, 100 near: downsampling to 250 keeps all far ones
    cfg[0].NUM_POINTS = {'train': 250, 'test': 250}
    proc = DataProcessor(cfg, point_cloud_range=[0, -40, -3, 70.4, 40, 1], training=True, num_point_features=4)
    out = proc.forward({'points': far.copy()})['points']
    assert out.shape == (250, 4) and len({tuple(p) for p in out}) == 250
    assert {tuple(p) for p in far[:200]} <= {tuple(p) for p in out}
