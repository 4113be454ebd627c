"""Scene description of the synthetic set: ground, entities (objects and clutter) and their primitive shapes.

Frame: LiDAR (x forward, y left, z up, sensor at the origin). The ground is the plane
``z = -sensor_height + gx * x + gy * y``; sidewalks are raised by ``CURB_HEIGHT`` on top of it.

An entity is one object (Car, Pedestrian, Cyclist, Van, Truck) or one piece of clutter (wall, pole, tree, ...).
Its 3D box is a LiDAR box ``[x, y, z, dx, dy, dz, heading]`` (geometric centre, OpenPCDet convention) and its
shape is a list of primitives (oriented boxes and ellipsoids) inside that box, so LiDAR returns look like a car
body with a cabin or a person made of stacked ellipsoids rather than like a plain box.

Example (the scene API used by the tests)::

    scene = Scene(sensor_height=1.73)
    scene.add_object('Car', x=15.0, y=0.0, heading=0.0, size=(3.9, 1.6, 1.5), rng=rng)
    prims, entity = scene.primitives()
"""
import numpy as np

from . import raycast as rc

CURB_HEIGHT = 0.15
OBJECT_CLASSES = ('Car', 'Pedestrian', 'Cyclist', 'Van', 'Truck')


def _part(kind, x, y, z, hx, hy, hz, refl, drop=0.0, yaw=0.0):
    """One primitive in an entity's local frame (origin at the bottom centre, x along the heading, z up)."""
    return (kind, x, y, z, hx, hy, hz, yaw, refl, drop)


def car_parts(l, w, h, rng, van=False):
    """Body, cabin (glass: dark, drops many returns), roof and four wheels of a car (or a van) of size l, w, h."""
    paint = rng.uniform(0.15, 0.6)
    body_top = (0.72 if van else 0.58) * h
    clearance = 0.28
    parts = [
        _part(rc.BOX, 0.0, 0.0, (clearance + body_top) / 2, l / 2 - 0.05, w / 2, (body_top - clearance) / 2, paint),
        # bumpers round the ends of the body a little
        _part(rc.ELLIPSOID, l / 2 - 0.12, 0.0, clearance + 0.2, 0.14, w / 2 - 0.08, 0.18, paint),
        _part(rc.ELLIPSOID, -l / 2 + 0.12, 0.0, clearance + 0.2, 0.14, w / 2 - 0.08, 0.18, paint),
    ]
    if van:
        cab_len, cab_x = 0.42 * l, 0.2 * l
        roof_len, roof_x = 0.5 * l, -0.22 * l  # box-shaped cargo part behind the cab
        parts.append(_part(rc.BOX, roof_x, 0.0, (body_top + h) / 2 - 0.01, roof_len / 2, w / 2 - 0.04,
                           (h - body_top) / 2 - 0.01, paint))
    else:
        cab_len, cab_x = rng.uniform(0.42, 0.55) * l, rng.uniform(-0.12, 0.0) * l
    roof_h = 0.06
    parts.append(_part(rc.BOX, cab_x, 0.0, (body_top + h - roof_h) / 2, cab_len / 2, 0.44 * w,
                       (h - roof_h - body_top) / 2, 0.05, drop=0.55))
    parts.append(_part(rc.BOX, cab_x - 0.03 * l, 0.0, h - roof_h / 2, cab_len / 2 - 0.15, 0.42 * w, roof_h / 2, paint))
    r = 0.32
    for sx in (1, -1):
        for sy in (1, -1):
            parts.append(_part(rc.ELLIPSOID, sx * (l / 2 - 0.75), sy * (w / 2 - 0.13), r, r, 0.12, r, 0.04))
    return parts


def truck_parts(l, w, h, rng):
    """A truck: cab in front, a tall cargo box behind it, wheels."""
    paint = rng.uniform(0.2, 0.7)
    cab_l = 2.2
    parts = [
        _part(rc.BOX, l / 2 - cab_l / 2, 0.0, (0.5 + 0.85 * h) / 2, cab_l / 2, w / 2 - 0.05, (0.85 * h - 0.5) / 2,
              paint),
        _part(rc.BOX, l / 2 - 0.3, 0.0, 0.75 * h - 0.05, 0.25, w / 2 - 0.15, 0.12 * h, 0.05, drop=0.5),
        _part(rc.BOX, -cab_l / 2 + 0.1, 0.0, (0.9 + h) / 2, (l - cab_l) / 2 - 0.1, w / 2, (h - 0.9) / 2,
              rng.uniform(0.3, 0.8)),
    ]
    for x in (l / 2 - 1.2, -l / 2 + 1.5, -l / 2 + 2.6):
        for sy in (1, -1):
            parts.append(_part(rc.ELLIPSOID, x, sy * (w / 2 - 0.2), 0.5, 0.5, 0.15, 0.5, 0.04))
    return parts


def pedestrian_parts(l, w, h, rng):
    """Legs, torso, arms and head as ellipsoids; stride and arm swing random."""
    cloth = rng.uniform(0.1, 0.5)
    stride = rng.uniform(-0.15, 0.15)
    leg_h = 0.47 * h
    torso_w = min(0.2, 0.4 * w)
    parts = [
        _part(rc.ELLIPSOID, stride, 0.09, leg_h / 2, 0.08, 0.08, leg_h / 2, cloth),
        _part(rc.ELLIPSOID, -stride, -0.09, leg_h / 2, 0.08, 0.08, leg_h / 2, cloth),
        _part(rc.ELLIPSOID, 0.0, 0.0, 0.64 * h, 0.12, torso_w, 0.18 * h, cloth),
        _part(rc.ELLIPSOID, -stride / 2, torso_w + 0.05, 0.62 * h, 0.05, 0.05, 0.15 * h, cloth),
        _part(rc.ELLIPSOID, stride / 2, -torso_w - 0.05, 0.62 * h, 0.05, 0.05, 0.15 * h, cloth),
        _part(rc.ELLIPSOID, 0.0, 0.0, h - 0.115, 0.1, 0.085, 0.115, 0.3),
    ]
    return parts


def cyclist_parts(l, w, h, rng):
    """A bicycle (two thin wheels and a frame) with a rider leaning over it."""
    cloth = rng.uniform(0.1, 0.5)
    r = min(0.35, l / 5)
    wx = l / 2 - r
    parts = [
        _part(rc.ELLIPSOID, wx, 0.0, r, r, 0.05, r, 0.3, drop=0.1),
        _part(rc.ELLIPSOID, -wx, 0.0, r, r, 0.05, r, 0.3, drop=0.1),
        _part(rc.BOX, 0.0, 0.0, r + 0.2, wx * 0.8, 0.04, 0.08, 0.4),
        _part(rc.ELLIPSOID, 0.05, 0.12, 0.62, 0.1, 0.07, 0.3, cloth),
        _part(rc.ELLIPSOID, 0.05, -0.12, 0.62, 0.1, 0.07, 0.3, cloth),
        _part(rc.ELLIPSOID, -0.02, 0.0, h - 0.5, 0.22, min(0.19, w / 2), 0.27, cloth),
        _part(rc.ELLIPSOID, 0.25, 0.2, h - 0.5, 0.2, 0.04, 0.05, cloth),
        _part(rc.ELLIPSOID, 0.25, -0.2, h - 0.5, 0.2, 0.04, 0.05, cloth),
        _part(rc.ELLIPSOID, 0.15, 0.0, h - 0.12, 0.1, 0.085, 0.12, 0.3),
    ]
    return parts


SHAPES = {
    'Car': car_parts,
    'Van': lambda l, w, h, rng: car_parts(l, w, h, rng, van=True),
    'Truck': truck_parts,
    'Pedestrian': pedestrian_parts,
    'Cyclist': cyclist_parts,
}


class Scene:
    """Ground plane plus entities, each a list of primitives (see ``raycast`` for the primitive table).

    Args:
        sensor_height: metres of the sensor above the ground at the origin.
        slope: (gx, gy) ground slope, dz/dx and dz/dy.
        sidewalks: list of (yaw, u_min, u_max): a raised strip ``u_min <= u <= u_max`` in the road frame rotated
            by ``yaw`` (u = lateral coordinate, left positive); used by ``ground_z`` to lift objects onto it.
    Attributes:
        entities: list of dicts {name, box (7,) float64 LiDAR box, labelled (bool)}; index = entity id.
    """

    def __init__(self, sensor_height=1.73, slope=(0.0, 0.0), sidewalks=()):
        self.ground = np.array([sensor_height, slope[0], slope[1]], dtype=np.float64)
        self.sidewalks = list(sidewalks)
        self.entities = []
        self.lane_lines = []  # (yaw, u, dashed) road markings, used for ground intensity
        self._rows = []
        self._row_entity = []

    def plane_z(self, x, y):
        """Height (LiDAR z) of the ground plane at (x, y)."""
        return -self.ground[0] + self.ground[1] * x + self.ground[2] * y

    def ground_z(self, x, y):
        """Height (LiDAR z) of the walkable surface at (x, y): plane plus curb on sidewalks."""
        z = self.plane_z(x, y)
        for yaw, u_min, u_max in self.sidewalks:
            u = -np.sin(yaw) * x + np.cos(yaw) * y
            if u_min <= u <= u_max:
                z += CURB_HEIGHT
        return z

    def add_entity(self, name, box, parts, labelled):
        """Add an entity whose ``parts`` are given in its local frame (origin = bottom centre of ``box``).

        Args:
            name: class name ('Car', ... or a clutter name such as 'wall').
            box: (7,) LiDAR box [x, y, z, dx, dy, dz, heading] (geometric centre).
            parts: list of ``_part`` tuples.
            labelled: whether the entity gets a KITTI label line.
        Returns:
            The entity id.
        """
        box = np.asarray(box, dtype=np.float64)
        eid = len(self.entities)
        c, s = np.cos(box[6]), np.sin(box[6])
        bottom = box[2] - box[5] / 2
        for kind, x, y, z, hx, hy, hz, yaw, refl, drop in parts:
            gx, gy = box[0] + c * x - s * y, box[1] + s * x + c * y
            row = np.zeros(rc.NUM_COLS)
            row[[rc.KIND, rc.CX, rc.CY, rc.CZ, rc.HX, rc.HY, rc.HZ]] = kind, gx, gy, bottom + z, hx, hy, hz
            row[rc.COS], row[rc.SIN] = np.cos(box[6] + yaw), np.sin(box[6] + yaw)
            row[rc.REFL], row[rc.DROP] = refl, drop
            self._rows.append(row)
            self._row_entity.append(eid)
        self.entities.append({'name': name, 'box': box, 'labelled': labelled})
        return eid

    def add_object(self, name, x, y, heading, size, rng, z_bottom=None):
        """Add a Car / Pedestrian / Cyclist / Van / Truck standing on the ground at (x, y).

        Args:
            size: (l, w, h) metres, i.e. (dx, dy, dz) of the LiDAR box.
            rng: ``numpy.random.Generator`` for the shape details (paint, stride, ...).
            z_bottom: bottom height; default ``ground_z(x, y)``.
        """
        if name not in SHAPES:
            raise KeyError(f'unknown object class {name!r}; valid: {sorted(SHAPES)}')
        l, w, h = size
        zb = self.ground_z(x, y) if z_bottom is None else z_bottom
        box = (x, y, zb + h / 2, l, w, h, heading)
        return self.add_entity(name, box, SHAPES[name](l, w, h, rng), labelled=True)

    def add_clutter(self, name, x, y, heading, parts, z_bottom=None):
        """Add an unlabelled entity (wall, pole, tree, ...); its box is the bounding box of its parts."""
        zb = self.ground_z(x, y) if z_bottom is None else z_bottom
        top = max(p[3] + p[6] for p in parts)
        ext = max(max(abs(p[1]) + p[4], abs(p[2]) + p[5]) for p in parts)
        box = (x, y, zb + top / 2, 2 * ext, 2 * ext, top, heading)
        return self.add_entity(name, box, parts, labelled=False)

    def primitives(self):
        """(P, raycast.NUM_COLS) float64 primitive table and (P,) int32 entity id per row."""
        if not self._rows:
            return np.zeros((0, rc.NUM_COLS)), np.zeros(0, dtype=np.int32)
        return np.stack(self._rows), np.asarray(self._row_entity, dtype=np.int32)

    def label_boxes(self):
        """Indices and (N, 7) LiDAR boxes of the labelled entities, with their class names."""
        idx = [i for i, e in enumerate(self.entities) if e['labelled']]
        boxes = np.array([self.entities[i]['box'] for i in idx], dtype=np.float64).reshape(-1, 7)
        return np.asarray(idx, dtype=np.int64), boxes, [self.entities[i]['name'] for i in idx]
