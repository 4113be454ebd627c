"""Numba ray caster of the synthetic LiDAR: one spinning sensor at the LiDAR origin against a primitive soup.

Frame: LiDAR (x forward, y left, z up), the sensor's optical centre at (0, 0, 0). The ground is the plane
``z = -height + gx * x + gy * y``; everything else is a list of primitives.

Primitive table ``prims`` (P, NUM_COLS) float64, one row per primitive (column indices are the module constants):
    KIND        0 = oriented box, 1 = ellipsoid (both may only rotate about z)
    CX, CY, CZ  centre, LiDAR frame, metres
    HX, HY, HZ  half extents (box) or semi-axes (ellipsoid) in the primitive frame, metres
    COS, SIN    cos / sin of the yaw (counter-clockwise from +x)
    REFL        reflectivity 0..1 (drives the intensity channel)
    DROP        extra dropout probability of returns from this primitive (glass, foliage)
    EL_LO/EL_HI elevation interval (rad) of the bounding sphere seen from the origin (filled by ``build_bins``)
``entity`` (P,) int32 says which scene entity (object, wall, tree...) a primitive belongs to; the primitives of one
entity must be consecutive rows, which lets the caster count each entity once per ray.

Speed: rays are only tested against the primitives whose bounding sphere overlaps the ray's azimuth bin
(``build_bins``) and elevation interval, so a 130k-ray sweep over ~300 primitives takes a few tens of ms.
"""
import math

import numba
import numpy as np

KIND, CX, CY, CZ, HX, HY, HZ, COS, SIN, REFL, DROP, EL_LO, EL_HI = range(13)
NUM_COLS = 13
BOX, ELLIPSOID = 0, 1
HIT_NONE, HIT_GROUND = -1, -2


def build_bins(prims, num_bins):
    """Azimuth bins of the primitives (CSR) and their elevation intervals.

    Args:
        prims: (P, NUM_COLS) float64 primitive table; columns EL_LO / EL_HI are written in place.
        num_bins: number of equal azimuth bins over [-pi, pi).
    Returns:
        bin_start (num_bins + 1,) int64, bin_items (K,) int32: primitive indices of bin b are
        ``bin_items[bin_start[b]:bin_start[b + 1]]`` in ascending order.
    """
    half = prims[:, HX:HZ + 1]
    radius = np.sqrt((half ** 2).sum(axis=1))  # bounding sphere of box or ellipsoid
    dxy = np.hypot(prims[:, CX], prims[:, CY])
    dist = np.hypot(dxy, prims[:, CZ])
    inside = dist <= radius + 1e-6
    el_c = np.arctan2(prims[:, CZ], dxy)
    el_half = np.arcsin(np.clip(radius / np.maximum(dist, 1e-9), 0.0, 1.0))
    prims[:, EL_LO] = np.where(inside, -np.pi, el_c - el_half)
    prims[:, EL_HI] = np.where(inside, np.pi, el_c + el_half)
    az_c = np.arctan2(prims[:, CY], prims[:, CX])
    az_half = np.where(dxy <= radius, np.pi, np.arcsin(np.clip(radius / np.maximum(dxy, 1e-9), 0.0, 1.0)))
    width = 2 * np.pi / num_bins
    members = [[] for _ in range(num_bins)]
    for i in range(prims.shape[0]):
        if az_half[i] >= np.pi - 1e-9:
            bins = range(num_bins)
        else:
            lo = int(np.floor((az_c[i] - az_half[i] + np.pi) / width))
            hi = int(np.floor((az_c[i] + az_half[i] + np.pi) / width))
            bins = [b % num_bins for b in range(lo, hi + 1)]
        for b in bins:
            members[b].append(i)
    counts = np.array([len(m) for m in members], dtype=np.int64)
    bin_start = np.zeros(num_bins + 1, dtype=np.int64)
    bin_start[1:] = np.cumsum(counts)
    flat = [i for m in members for i in m]
    return bin_start, np.asarray(flat, dtype=np.int32)


@numba.njit(cache=True, inline='always')
def _hit_primitive(p, dx, dy, dz):
    """Entry distance along the unit ray (dx, dy, dz) from the origin and |cos| of the incidence; (-1, 0) on miss."""
    c, s = p[COS], p[SIN]
    # origin and direction in the primitive frame (rotate by -yaw about z)
    ox, oy, oz = -(c * p[CX] + s * p[CY]), -(-s * p[CX] + c * p[CY]), -p[CZ]
    lx, ly, lz = c * dx + s * dy, -s * dx + c * dy, dz
    if p[KIND] == BOX:
        t_near, t_far, axis = -1e30, 1e30, 0
        for k in range(3):
            o = ox if k == 0 else (oy if k == 1 else oz)
            d = lx if k == 0 else (ly if k == 1 else lz)
            h = p[HX + k]
            if abs(d) < 1e-12:
                if o < -h or o > h:
                    return -1.0, 0.0
                continue
            t1, t2 = (-h - o) / d, (h - o) / d
            if t1 > t2:
                t1, t2 = t2, t1
            if t1 > t_near:
                t_near, axis = t1, k
            t_far = min(t_far, t2)
            if t_near > t_far:
                return -1.0, 0.0
        if t_near <= 0.0:
            return -1.0, 0.0
        return t_near, abs(lx if axis == 0 else (ly if axis == 1 else lz))
    # ellipsoid: scale to the unit sphere and solve |o + t d| = 1
    ex, ey, ez = ox / p[HX], oy / p[HY], oz / p[HZ]
    fx, fy, fz = lx / p[HX], ly / p[HY], lz / p[HZ]
    a = fx * fx + fy * fy + fz * fz
    b = 2.0 * (ex * fx + ey * fy + ez * fz)
    cc = ex * ex + ey * ey + ez * ez - 1.0
    disc = b * b - 4.0 * a * cc
    if disc < 0.0:
        return -1.0, 0.0
    t = (-b - math.sqrt(disc)) / (2.0 * a)
    if t <= 0.0:
        return -1.0, 0.0
    # outward normal of the ellipsoid at the hit: gradient (x / a^2, y / b^2, z / c^2) in the primitive frame
    nx = (ex + t * fx) / p[HX]
    ny = (ey + t * fy) / p[HY]
    nz = (ez + t * fz) / p[HZ]
    nn = math.sqrt(nx * nx + ny * ny + nz * nz)
    return t, abs(lx * nx + ly * ny + lz * nz) / max(nn, 1e-12)


@numba.njit(cache=True)
def cast_sweep(az, el, prims, entity, num_entities, bin_start, bin_items, ground, max_range):
    """Cast every ray of a sweep (elevation-major) and count, per entity, the rays that would reach it unblocked.

    Args:
        az: (A,) float64 azimuths (rad, in [-pi, pi)); el: (E,) float64 elevations (rad).
        prims, entity, bin_start, bin_items: see the module docstring and ``build_bins``.
        num_entities: number of entities (entity ids are 0..num_entities - 1).
        ground: (3,) float64 [height, gx, gy]: ground plane ``z = -height + gx x + gy y``.
        max_range: rays longer than this (metres) return nothing.
    Returns:
        t (E, A) float32 hit distance (0 where no hit), hit (E, A) int32 primitive index, HIT_GROUND or HIT_NONE,
        cos_inc (E, A) float32 |cos| of the incidence angle, would (num_entities,) int64 number of rays that hit
        the entity when every other primitive is ignored (the occlusion-free ray count).
    """
    n_el, n_az = el.shape[0], az.shape[0]
    num_bins = bin_start.shape[0] - 1
    t_out = np.zeros((n_el, n_az), dtype=np.float32)
    hit_out = np.full((n_el, n_az), HIT_NONE, dtype=np.int32)
    cos_out = np.zeros((n_el, n_az), dtype=np.float32)
    would = np.zeros(num_entities, dtype=np.int64)
    height, gx, gy = ground[0], ground[1], ground[2]
    gnorm = math.sqrt(gx * gx + gy * gy + 1.0)
    for j in range(n_az):
        ca, sa = math.cos(az[j]), math.sin(az[j])
        b = int((az[j] + math.pi) / (2.0 * math.pi) * num_bins) % num_bins
        for i in range(n_el):
            ce, se = math.cos(el[i]), math.sin(el[i])
            dx, dy, dz = ce * ca, ce * sa, se
            best, best_hit, best_cos = max_range, HIT_NONE, 0.0
            denom = dz - gx * dx - gy * dy
            if denom < 0.0:
                tg = -height / denom
                if tg < best:
                    best, best_hit, best_cos = tg, HIT_GROUND, abs(denom) / gnorm
            last_entity = -1
            for k in range(bin_start[b], bin_start[b + 1]):
                q = bin_items[k]
                p = prims[q]
                if el[i] < p[EL_LO] or el[i] > p[EL_HI]:
                    continue
                t, cos_inc = _hit_primitive(p, dx, dy, dz)
                if t <= 0.0 or t >= max_range:
                    continue
                if entity[q] != last_entity:
                    would[entity[q]] += 1
                    last_entity = entity[q]
                if t < best:
                    best, best_hit, best_cos = t, q, cos_inc
            if best_hit != HIT_NONE:
                t_out[i, j] = best
                hit_out[i, j] = best_hit
                cos_out[i, j] = best_cos
    return t_out, hit_out, cos_out, would
