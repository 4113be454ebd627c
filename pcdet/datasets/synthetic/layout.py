"""Random street scenes: a road with lanes, parked rows, traffic, sidewalks, pedestrians, cyclists and clutter.

Road frame: s along the road, u lateral (left positive), ego (the sensor) at s = u = 0 in one of the lanes; the
road frame is rotated by a small random yaw into the LiDAR frame (x forward, y left, z up). Objects are placed
mostly in front of the sensor (s from -30 to 75 m), like KITTI where most labelled objects are 0-60 m ahead.

Sizes follow KITTI's label statistics (mean / std of h, w, l per class, clipped to plausible ranges).
"""
import numpy as np

from . import raycast as rc
from .scene import CURB_HEIGHT, Scene, _part

# class: ((mean l, w, h), (std l, w, h), (min l, w, h), (max l, w, h)), from KITTI training labels
SIZE_STATS = {
    'Car': ((3.89, 1.62, 1.53), (0.42, 0.10, 0.14), (3.2, 1.4, 1.3), (5.0, 1.95, 2.0)),
    'Van': ((5.08, 1.90, 2.21), (0.50, 0.12, 0.20), (4.2, 1.6, 1.8), (6.2, 2.2, 2.7)),
    'Truck': ((10.1, 2.59, 3.25), (2.50, 0.15, 0.40), (6.0, 2.2, 2.5), (16.0, 2.9, 4.0)),
    'Pedestrian': ((0.84, 0.66, 1.76), (0.20, 0.12, 0.11), (0.4, 0.4, 1.4), (1.2, 1.0, 2.0)),
    'Cyclist': ((1.76, 0.60, 1.74), (0.15, 0.10, 0.09), (1.4, 0.4, 1.5), (2.0, 0.9, 2.0)),
}
LANE_WIDTH = 3.4
S_MIN, S_MAX = -30.0, 75.0


def sample_size(name, rng):
    """(l, w, h) metres of an object of class ``name``."""
    mean, std, lo, hi = (np.asarray(v) for v in SIZE_STATS[name])
    return tuple(float(v) for v in np.clip(rng.normal(mean, std), lo, hi))


class _Placer:
    """Rejects placements whose BEV circle overlaps an already placed one (metres, LiDAR frame)."""

    def __init__(self):
        self.circles = [(0.0, 0.0, 2.6)]  # the ego vehicle

    def free(self, x, y, radius):
        return all((x - cx) ** 2 + (y - cy) ** 2 > (radius + cr) ** 2 for cx, cy, cr in self.circles)

    def take(self, x, y, radius):
        self.circles.append((x, y, radius))


def random_scene(rng, sensor_height=1.73):
    """Draw one street scene.

    Args:
        rng: ``numpy.random.Generator``; the scene is a pure function of its state.
        sensor_height: sensor height above the ground at the origin, metres.
    Returns:
        ``scene.Scene`` with labelled objects (Car, Pedestrian, Cyclist, Van, Truck) and clutter.
    """
    yaw = rng.normal(0.0, 0.05) if rng.random() < 0.8 else rng.uniform(-0.35, 0.35)
    c, s_ = np.cos(yaw), np.sin(yaw)

    def world(s, u):
        return c * s - s_ * u, s_ * s + c * u

    n_lanes = int(rng.choice([1, 2, 2, 3, 4]))
    ego_lane = int(rng.integers(0, n_lanes))
    n_same = int(rng.integers(ego_lane + 1, n_lanes + 1))  # lanes 0..n_same-1 drive along +s
    u_right = -(ego_lane + 0.5) * LANE_WIDTH
    u_left = u_right + n_lanes * LANE_WIDTH

    # each side: parking strip (none / parallel / perpendicular), then a raised sidewalk, then walls or green
    sides = []
    for sign, edge in ((-1, u_right), (1, u_left)):
        mode = rng.choice(['none', 'parallel', 'perpendicular'], p=[0.45, 0.4, 0.15])
        park_w = {'none': 0.0, 'parallel': 2.3, 'perpendicular': 5.2}[mode]
        walk_w = rng.uniform(2.0, 4.5)
        inner = edge + sign * park_w
        outer = inner + sign * walk_w
        sides.append(dict(sign=sign, edge=edge, mode=mode, inner=inner, outer=outer))
    sidewalks = [(yaw, min(sd['inner'], sd['outer']), max(sd['inner'], sd['outer'])) for sd in sides]
    scene = Scene(sensor_height, slope=tuple(rng.normal(0.0, 0.006, 2)), sidewalks=sidewalks)
    placer = _Placer()

    for i in range(1, n_lanes):
        dashed = i != n_same
        scene.lane_lines.append((yaw, u_right + i * LANE_WIDTH, dashed))
    scene.lane_lines += [(yaw, u_right + 0.15, False), (yaw, u_left - 0.15, False)]

    def put(name, s, u, heading_road, size=None, on_walk=False):
        size = size or sample_size(name, rng)
        x, y = world(s, u)
        radius = 0.5 * np.hypot(size[0], size[1]) * (0.9 if name in ('Car', 'Van', 'Truck') else 0.7)
        if not placer.free(x, y, radius):
            return False
        placer.take(x, y, radius)
        scene.add_object(name, x, y, _wrap(yaw + heading_road), size, rng)
        return True

    def vehicle_class():
        r = rng.random()
        return 'Car' if r < 0.88 else ('Van' if r < 0.97 else 'Truck')

    # parked rows
    for sd in sides:
        if sd['mode'] == 'none':
            continue
        occupancy = rng.uniform(0.2, 0.65)
        oncoming_side = sd['sign'] > 0 and n_same < n_lanes
        s = rng.uniform(S_MIN, S_MIN + 6)
        while s < S_MAX:
            name = vehicle_class() if sd['mode'] == 'parallel' else 'Car'
            size = sample_size(name, rng)
            step = size[0] + rng.uniform(0.8, 2.5) if sd['mode'] == 'parallel' else rng.uniform(2.5, 3.0)
            if rng.random() < occupancy:
                if sd['mode'] == 'parallel':
                    u = sd['edge'] + sd['sign'] * (size[1] / 2 + rng.uniform(0.15, 0.5))
                    heading = (np.pi if oncoming_side else 0.0) + rng.normal(0.0, 0.04)
                else:
                    u = sd['edge'] + sd['sign'] * (size[0] / 2 + rng.uniform(0.2, 0.6))
                    heading = sd['sign'] * np.pi / 2 + (np.pi if rng.random() < 0.3 else 0) + rng.normal(0, 0.08)
                put(name, s + step / 2, u, heading, size)
            s += step

    # traffic in the lanes
    for lane in range(n_lanes):
        u_c = u_right + (lane + 0.5) * LANE_WIDTH
        heading0 = 0.0 if lane < n_same else np.pi
        for _ in range(rng.poisson(0.9)):
            s = rng.uniform(S_MIN, S_MAX)
            if lane == ego_lane and abs(s) < 7:
                continue
            turn = rng.normal(0.0, 0.4) if rng.random() < 0.1 else rng.normal(0.0, 0.03)
            put(vehicle_class(), s, u_c + rng.normal(0.0, 0.25), heading0 + turn)

    # cyclists near the road edges, pedestrians on the sidewalks (a few crossing)
    for _ in range(rng.poisson(1.0)):
        right = rng.random() < 0.6
        u = (u_right + 0.8) if right else (u_left - 0.8)
        heading = (0.0 if right or n_same == n_lanes else np.pi) + rng.normal(0.0, 0.1)
        if rng.random() < 0.3:
            heading = rng.uniform(-np.pi, np.pi)
        put('Cyclist', rng.uniform(-10.0, 55.0), u, heading)
    for _ in range(rng.poisson(2.2)):
        sd = sides[int(rng.integers(0, 2))]
        s0 = rng.uniform(-10.0, 50.0)
        lo, hi = sorted((sd['inner'], sd['outer']))
        for k in range(1 if rng.random() < 0.7 else int(rng.integers(2, 4))):
            if rng.random() < 0.25:  # crossing or at the road edge, in the open
                put('Pedestrian', s0 + k, rng.uniform(u_right, u_left), rng.choice([-1, 1]) * np.pi / 2)
            else:
                put('Pedestrian', s0 + 0.9 * k, rng.uniform(lo + 0.4, hi - 0.4), rng.uniform(-np.pi, np.pi))

    _add_clutter(scene, rng, sides, world, yaw, placer)
    return scene


def _wrap(angle):
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _add_clutter(scene, rng, sides, world, yaw, placer):
    """Sidewalk slabs, walls (with gaps), poles, trees, bushes and fences along both sides."""
    for sd in sides:
        sign = sd['sign']
        lo, hi = sorted((sd['inner'], sd['outer']))
        # sidewalk: 8 m slabs so each sits on the (sloped) ground; top CURB_HEIGHT above it
        for s in np.arange(-48.0, 96.0, 8.0):
            x, y = world(s + 4.0, (lo + hi) / 2)
            half_h = (0.15 + CURB_HEIGHT) / 2  # reaches 0.15 m below the ground so no gap shows on slopes
            parts = [_part(rc.BOX, 0.0, 0.0, half_h, 4.0, (hi - lo) / 2, half_h, 0.3)]
            zg = scene.plane_z(x, y)
            scene.add_clutter('sidewalk', x, y, yaw, parts, z_bottom=zg - 0.15)
        # building fronts or green behind the sidewalk
        walls = rng.random() < 0.65
        s = rng.uniform(-55.0, -40.0)
        while s < 100.0:
            length = rng.uniform(8.0, 30.0) if walls else rng.uniform(4.0, 12.0)
            u = sd['outer'] + sign * rng.uniform(0.2, 1.5)
            x, y = world(s + length / 2, u)
            if walls and rng.random() < 0.85:
                height = rng.uniform(3.0, 14.0)
                parts = [_part(rc.BOX, 0.0, 0.0, height / 2, length / 2, 0.3, height / 2, rng.uniform(0.15, 0.6))]
                scene.add_clutter('wall', x, y, yaw, parts)
            elif not walls:
                kind = rng.random()
                if kind < 0.4:  # hedge / bush
                    parts = [_part(rc.ELLIPSOID, 0.0, 0.0, 0.6, length / 2, rng.uniform(0.5, 1.2), 0.9,
                                   0.35, drop=0.25)]
                    scene.add_clutter('bush', x, y, yaw, parts)
                elif kind < 0.7:  # fence
                    parts = [_part(rc.BOX, 0.0, 0.0, 0.55, length / 2, 0.03, 0.55, 0.4, drop=0.5)]
                    scene.add_clutter('fence', x, y, yaw, parts)
                # trees further out
                for _ in range(int(rng.integers(0, 3))):
                    tu = sd['outer'] + sign * rng.uniform(2.0, 15.0)
                    tx, ty = world(s + rng.uniform(0, length), tu)
                    _tree(scene, rng, tx, ty, placer)
            s += length + (rng.uniform(0.0, 8.0) if rng.random() < 0.4 else 0.0)
        # poles and trees on the sidewalk, near the curb
        s = rng.uniform(-40.0, -25.0)
        while s < 90.0:
            u = sd['inner'] + sign * 0.5
            x, y = world(s, u)
            if rng.random() < 0.5:
                if placer.free(x, y, 0.3):
                    placer.take(x, y, 0.3)
                    h = rng.uniform(4.0, 9.0)
                    parts = [_part(rc.BOX, 0.0, 0.0, h / 2, 0.08, 0.08, h / 2, 0.5)]
                    scene.add_clutter('pole', x, y, yaw, parts)
            else:
                _tree(scene, rng, x, y, placer)
            s += rng.uniform(10.0, 30.0)


def _tree(scene, rng, x, y, placer):
    """A trunk (box) under a sparse crown (ellipsoid with high dropout)."""
    if not placer.free(x, y, 0.5):
        return
    placer.take(x, y, 0.5)
    trunk = rng.uniform(2.5, 4.0)
    r = rng.uniform(1.0, 2.5)
    parts = [_part(rc.BOX, 0.0, 0.0, trunk / 2, 0.15, 0.15, trunk / 2, 0.35),
             _part(rc.ELLIPSOID, 0.0, 0.0, trunk + r * 0.7, r, r, r * 0.8, 0.3, drop=0.35)]  # crown above heads
    scene.add_clutter('tree', x, y, rng.uniform(-np.pi, np.pi), parts)
