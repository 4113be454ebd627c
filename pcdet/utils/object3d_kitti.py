"""KITTI label parsing (``label_2/*.txt``), OpenPCDet names.

A label line has 15 fields, or 16 with a detection score::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]

(x, y, z) is the bottom centre of the box in the rect camera frame; h, w, l metres; x1..y2 image-2 pixels.
"""
import numpy as np

CLASS_TYPE_TO_ID = {'Car': 1, 'Pedestrian': 2, 'Cyclist': 3, 'Van': 4}


def cls_type_to_id(cls_type):
    """KITTI class name -> id (Car 1, Pedestrian 2, Cyclist 3, Van 4), -1 for any other class."""
    return CLASS_TYPE_TO_ID.get(cls_type, -1)


def get_objects_from_label(label_file):
    """Parse a KITTI label file into a list of ``Object3d`` (blank lines are skipped).

    Raises:
        FileNotFoundError naming the file; ValueError naming file and line for a malformed line.
    """
    try:
        with open(label_file, encoding='utf-8') as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise FileNotFoundError(f'label file not found: {label_file}') from None
    return [Object3d(line, source=f'{label_file}:{lineno}')
            for lineno, line in enumerate(lines, start=1) if line.strip()]


class Object3d:
    """One KITTI object.

    Attributes:
        cls_type (str), cls_id (int, see ``cls_type_to_id``), truncation (float 0..1), occlusion (float, 0 visible,
        1 partly, 2 largely occluded, 3 unknown), alpha (observation angle, rad), box2d (4,) float32 [x1, y1, x2, y2],
        h, w, l (float metres), loc (3,) float32 bottom centre in rect camera frame, dis_to_cam (float), ry (float,
        rad), score (float, -1.0 for ground truth), level (0 easy, 1 moderate, 2 hard, -1 other), level_str, src.
    """

    def __init__(self, line, source='<label line>'):
        label = line.split()
        if len(label) not in (15, 16):
            raise ValueError(f'{source}: expected 15 fields (16 with score), got {len(label)}: {line.strip()[:80]!r}')
        try:
            values = [float(x) for x in label[1:]]
        except ValueError:
            raise ValueError(f'{source}: non-numeric field in {line.strip()[:80]!r}') from None
        self.src = line
        self.cls_type = label[0]
        self.cls_id = cls_type_to_id(self.cls_type)
        self.truncation = values[0]
        self.occlusion = values[1]
        self.alpha = values[2]
        self.box2d = np.array(values[3:7], dtype=np.float32)
        self.h, self.w, self.l = values[7], values[8], values[9]
        self.loc = np.array(values[10:13], dtype=np.float32)
        self.dis_to_cam = float(np.linalg.norm(self.loc))
        self.ry = values[13]
        self.score = values[14] if len(label) == 16 else -1.0
        self.level_str = None
        self.level = self.get_kitti_obj_level()

    def get_kitti_obj_level(self):
        """KITTI difficulty from 2D box height (y2 - y1 + 1 px), truncation and occlusion; sets ``level_str``."""
        height = float(self.box2d[3]) - float(self.box2d[1]) + 1
        if height >= 40 and self.truncation <= 0.15 and self.occlusion <= 0:
            self.level_str = 'Easy'
            return 0
        if height >= 25 and self.truncation <= 0.3 and self.occlusion <= 1:
            self.level_str = 'Moderate'
            return 1
        if height >= 25 and self.truncation <= 0.5 and self.occlusion <= 2:
            self.level_str = 'Hard'
            return 2
        self.level_str = 'UnKnown'
        return -1

    def generate_corners3d(self):
        """(8, 3) float64 corners in the rect camera frame (order of ``boxes3d_to_corners3d_kitti_camera``)."""
        l, h, w = self.l, self.h, self.w
        x_corners = [l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]
        y_corners = [0, 0, 0, 0, -h, -h, -h, -h]
        z_corners = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
        c, s = np.cos(self.ry), np.sin(self.ry)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # rotation about camera +y
        return (rot @ np.array([x_corners, y_corners, z_corners])).T + self.loc

    def to_str(self):
        return (f'{self.cls_type} {self.truncation:.3f} {self.occlusion:.3f} {self.alpha:.3f} box2d: {self.box2d} '
                f'hwl: [{self.h:.3f} {self.w:.3f} {self.l:.3f}] pos: {self.loc} ry: {self.ry:.3f}')

    def to_kitti_format(self):
        """The object as a KITTI label line (15 fields, 16 when it has a score)."""
        line = (f'{self.cls_type} {self.truncation:.2f} {int(self.occlusion)} {self.alpha:.2f} '
                f'{self.box2d[0]:.2f} {self.box2d[1]:.2f} {self.box2d[2]:.2f} {self.box2d[3]:.2f} '
                f'{self.h:.2f} {self.w:.2f} {self.l:.2f} {self.loc[0]:.2f} {self.loc[1]:.2f} {self.loc[2]:.2f} '
                f'{self.ry:.2f}')
        return line if self.score == -1.0 else f'{line} {self.score:.4f}'
