"""Render one view of a synthetic place: an image and its exact label map, drawn together.

A pinhole camera (position, yaw, height) projects the world's planar polygons, discs and lines;
each primitive is painted into the image (with its colour under the view's *condition*) and
into the label map (with its class id) from the same integer coordinates, far to near, so the
two are aligned pixel for pixel. Conditions change appearance only: light (day, overcast, dusk,
night with lit windows), season (leaf colour and density, snow), fog and sensor noise. Leaves
that fall in winter are absent from both image and label map, as a true segmentation would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synthetic_props import ADE, Group

LIGHTS = ("day", "overcast", "dusk", "night")
SEASONS = ("summer", "spring", "autumn", "winter")
NEAR = 1.0  # metres: geometry closer than this to the camera is clipped

SKY = {  # BGR (top of the image, horizon)
    "day": ((205, 140, 70), (235, 215, 190)),
    "overcast": ((190, 187, 183), (218, 216, 214)),
    "dusk": ((110, 55, 70), (90, 150, 240)),
    "night": ((35, 14, 8), (70, 40, 30)),
}
LIGHT = {  # global gain, BGR tint, desaturation
    "day": (1.0, (1.0, 1.0, 1.0), 0.0),
    "overcast": (0.82, (1.02, 1.0, 0.97), 0.35),
    "dusk": (0.62, (0.8, 0.92, 1.18), 0.1),
    "night": (0.27, (1.35, 1.05, 0.8), 0.3),
}
LEAVES = {  # base leaf colours (BGR) and the fraction of leaf clusters present
    "summer": ([(40, 125, 45), (50, 150, 70), (30, 100, 40)], 1.0),
    "spring": ([(80, 190, 120), (90, 200, 140), (190, 160, 235)], 0.85),
    "autumn": ([(30, 110, 200), (40, 150, 215), (30, 60, 170)], 0.55),
    "winter": ([(60, 80, 70)], 0.0),
}
GRASS = {"summer": (60, 140, 80), "spring": (70, 175, 95), "autumn": (70, 130, 150), "winter": (232, 232, 236)}


@dataclass
class Camera:
    x: float  # lateral position (metres, +X right)
    z: float  # position along the street
    yaw: float  # radians, positive turns right
    height: float  # eye height above the ground
    f: float  # focal length (pixels)
    cx: float
    cy: float  # horizon row


@dataclass
class Condition:
    light: str = "day"
    season: str = "summer"
    fog: float = 0.0  # 0..1 strength
    noise: float = 2.0  # Gaussian sensor noise sigma (grey levels)
    blur: bool = False
    sun_left: bool = True  # which street side the sun lights

    @property
    def name(self) -> str:
        return f"{self.light}-{self.season}" + ("-fog" if self.fog > 0 else "")


MATERIALS = (
    "leaves",
    "grass",
    "pavement",
    "road",
    "window",
    "lamp",
    "car_light",
    "facade",
    "door",
    "sign",
    "roof",
    "fence",
    "wall_end",
    "trunk",
    "marking",
    "metal",
    "car_body",
    "car_glass",
    "tyre",
    "cloth",
    "skin",
)
_SUNLIT = [MATERIALS.index(m) for m in ("facade", "window", "door", "sign", "roof", "fence")]
KINDS = ("poly", "disc", "line")


@dataclass
class Packed:
    """Primitives flattened into arrays, so that a view transforms all vertices at once."""

    kind: np.ndarray  # (P,) index into KINDS
    start: np.ndarray  # (P,) first vertex
    count: np.ndarray  # (P,) vertex count
    verts: np.ndarray  # (V, 3) world coordinates
    label: np.ndarray  # (P,) class id
    material: np.ndarray  # (P,) index into MATERIALS
    colour: np.ndarray  # (P, 3) base BGR
    radius: np.ndarray
    u: np.ndarray
    side: np.ndarray  # (P,) -1/+1 for walls in a plane X = const (façades), else 0
    group: np.ndarray  # (P,) group index
    anchors: np.ndarray  # (G, 3)
    layers: np.ndarray  # (G,)


def pack(groups: list[Group]) -> Packed:
    kinds, starts, counts, verts, labels, mats, cols, radii, us, sides, gids = ([] for _ in range(11))
    n = 0
    for gi, g in enumerate(groups):
        for p in g.prims:
            kinds.append(KINDS.index(p.kind))
            starts.append(n)
            counts.append(len(p.pts))
            n += len(p.pts)
            verts.append(p.pts)
            labels.append(p.label)
            mats.append(MATERIALS.index(p.material))
            cols.append(p.colour)
            radii.append(p.radius)
            us.append(p.u)
            planar_x = p.kind == "poly" and np.ptp(p.pts[:, 0]) < 1e-6
            sides.append(int(np.sign(p.pts[0, 0])) if planar_x else 0)
            gids.append(gi)
    return Packed(
        np.array(kinds),
        np.array(starts),
        np.array(counts),
        np.concatenate(verts).astype(np.float64),
        np.array(labels, np.uint8),
        np.array(mats),
        np.array(cols, np.float32).reshape(-1, 3),
        np.array(radii),
        np.array(us),
        np.array(sides),
        np.array(gids),
        np.array([g.anchor for g in groups], np.float64).reshape(-1, 3),
        np.array([g.layer for g in groups]),
    )


def concat(a: Packed, b: Packed) -> Packed:
    """``a`` then ``b`` as one set (b's vertex and group indices shifted)."""
    return Packed(
        np.concatenate([a.kind, b.kind]),
        np.concatenate([a.start, b.start + len(a.verts)]),
        np.concatenate([a.count, b.count]),
        np.concatenate([a.verts, b.verts]),
        np.concatenate([a.label, b.label]),
        np.concatenate([a.material, b.material]),
        np.concatenate([a.colour, b.colour]),
        np.concatenate([a.radius, b.radius]),
        np.concatenate([a.u, b.u]),
        np.concatenate([a.side, b.side]),
        np.concatenate([a.group, b.group + len(a.anchors)]),
        np.concatenate([a.anchors, b.anchors]),
        np.concatenate([a.layers, b.layers]),
    )


def _to_cam(pts: np.ndarray, cam: Camera) -> np.ndarray:
    rel = pts - np.array([cam.x, cam.height, cam.z])
    c, s = np.cos(cam.yaw), np.sin(cam.yaw)
    return np.stack([c * rel[:, 0] - s * rel[:, 2], rel[:, 1], s * rel[:, 0] + c * rel[:, 2]], axis=1)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman clipping of a camera-space polygon against the plane z = NEAR."""
    out = []
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _project(pts: np.ndarray, cam: Camera) -> np.ndarray:
    z = np.maximum(pts[:, 2], 1e-9)
    return np.stack([cam.cx + cam.f * pts[:, 0] / z, cam.cy - cam.f * pts[:, 1] / z], axis=1)


def colours(pk: Packed, cond: Condition) -> tuple[np.ndarray, np.ndarray]:
    """(BGR colour of every primitive under ``cond``, mask of primitives present in this view)."""
    m = pk.material
    col = pk.colour.astype(np.float32).copy()
    present = np.ones(len(m), bool)
    leaves = m == MATERIALS.index("leaves")
    if leaves.any():
        palette, density = LEAVES[cond.season]
        palette = np.array(palette, np.float32)
        # Bushes are partly evergreen; trees lose all their leaves in winter.
        keep = np.where(pk.label == ADE["tree"], density, max(density, 0.4))
        present &= ~(leaves & (pk.u >= keep))
        idx = (pk.u * 997).astype(np.int64) % len(palette)
        shade = 0.8 + 0.4 * ((pk.u * 31) % 1)
        col[leaves] = (palette[idx] * shade[:, None])[leaves]
    col[m == MATERIALS.index("grass")] = GRASS[cond.season]
    if cond.season == "winter":
        snowy = (m == MATERIALS.index("pavement")) | (m == MATERIALS.index("road"))
        col[snowy] = col[snowy] * 0.5 + np.array((215, 215, 220), np.float32) * 0.5
    if cond.light in ("day", "dusk"):
        lit_side = np.isin(m, _SUNLIT) & (pk.side != 0)
        away = lit_side & ((pk.side < 0) != cond.sun_left)
        col[away] *= 0.72
    gain, tint, desat = LIGHT[cond.light]
    grey = col.mean(axis=1, keepdims=True)
    col = np.clip((col * (1 - desat) + grey * desat) * np.array(tint, np.float32) * gain, 0, 255)
    if cond.light == "night":
        glow = (
            ((m == MATERIALS.index("window")) & (pk.u < 0.45))
            | (m == MATERIALS.index("lamp"))
            | (m == MATERIALS.index("car_light"))
        )
        col[glow] = (np.array((90, 210, 255), np.float32)[None] * (0.8 + 0.4 * pk.u[:, None]))[glow]
    return col, present


def _sky(h: int, w: int, cam: Camera, cond: Condition) -> np.ndarray:
    top, horizon = (np.array(c, np.float32) for c in SKY[cond.light])
    t = np.clip(np.arange(h, dtype=np.float32) / max(cam.cy, 1.0), 0, 1)[:, None]
    rows = top * (1 - t) + horizon * t
    return np.repeat(rows[:, None, :], w, axis=1)


def _paint_order(pk: Packed, cam: Camera) -> np.ndarray:
    """Primitive indices far to near: ground first, then buildings, then objects; groups by depth."""
    depth = _to_cam(pk.anchors, cam)[:, 2]
    g_order = np.lexsort((-depth, pk.layers))
    rank = np.empty(len(g_order), np.int64)
    rank[g_order] = np.arange(len(g_order))
    return np.lexsort((np.arange(len(pk.group)), rank[pk.group]))


def render(
    pk: Packed, cam: Camera, cond: Condition, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(BGR uint8 image, uint8 label map of ADE20K ids) of one view of the packed primitives."""
    import cv2

    w, h = size
    img = np.ascontiguousarray(_sky(h, w, cam, cond).astype(np.uint8))
    lab = np.full((h, w), ADE["sky"], dtype=np.uint8)
    cam_v = _to_cam(pk.verts, cam)
    uv = _project(cam_v, cam)
    col, present = colours(pk, cond)
    z = cam_v[:, 2]
    # Per-primitive extents in one pass (vertices of a primitive are contiguous).
    zmin = np.minimum.reduceat(z, pk.start)
    umin, umax = np.minimum.reduceat(uv[:, 0], pk.start), np.maximum.reduceat(uv[:, 0], pk.start)
    vmin, vmax = np.minimum.reduceat(uv[:, 1], pk.start), np.maximum.reduceat(uv[:, 1], pk.start)
    reach = np.where(pk.kind == 1, cam.f * pk.radius / np.maximum(zmin, NEAR), 0.0)
    clipped = zmin < NEAR
    on_screen = (umax + reach >= 0) & (umin - reach < w) & (vmax + reach >= 0) & (vmin - reach < h)
    # Discs and lines reaching behind the camera are dropped; polygons are clipped there instead.
    visible = present & ((pk.kind == 0) & (clipped | on_screen) | (pk.kind != 0) & ~clipped & on_screen)
    iuv = np.clip(np.round(uv), -(1 << 20), 1 << 20).astype(np.int32)  # bounded for cv2's fixed point
    colour_list = col.tolist()
    order = _paint_order(pk, cam)
    for i in order[visible[order]]:
        a, n, kind = pk.start[i], pk.count[i], pk.kind[i]
        colour = colour_list[i]
        label = int(pk.label[i])
        if kind == 0:
            if clipped[i]:
                part = _clip_near(cam_v[a : a + n])
                if len(part) < 3:
                    continue
                pts = _project(part, cam)
                if pts[:, 0].max() < 0 or pts[:, 0].min() >= w or pts[:, 1].max() < 0 or pts[:, 1].min() >= h:
                    continue
                poly = np.clip(np.round(pts), -(1 << 20), 1 << 20).astype(np.int32)
            else:
                poly = iuv[a : a + n]
            cv2.fillPoly(img, [poly], colour)
            cv2.fillPoly(lab, [poly], label)
        elif kind == 1:
            r = max(1, round(cam.f * pk.radius[i] / z[a]))
            centre = (int(iuv[a, 0]), int(iuv[a, 1]))
            cv2.circle(img, centre, r, colour, -1)
            cv2.circle(lab, centre, r, label, -1)
        else:
            t = max(1, round(cam.f * pk.radius[i] / (0.5 * (z[a] + z[a + 1]))))
            p0, p1 = (int(iuv[a, 0]), int(iuv[a, 1])), (int(iuv[a + 1, 0]), int(iuv[a + 1, 1]))
            cv2.line(img, p0, p1, colour, t)
            cv2.line(lab, p0, p1, label, t)
    out = img.astype(np.float32)
    if cond.fog > 0:
        # Denser towards the horizon, where the scene is far away.
        rows = np.arange(h, dtype=np.float32)
        near = np.clip(np.abs(rows - cam.cy) / (0.55 * h), 0, 1)
        alpha = (cond.fog * (1 - near) ** 1.5)[:, None, None]
        fog = np.array(SKY[cond.light][1], np.float32) * (0.9 if cond.light != "night" else 1.2)
        out = out * (1 - alpha) + fog * alpha
    if cond.blur:
        out = cv2.GaussianBlur(out, (3, 3), 0.8)
    if cond.noise > 0:
        out += rng.normal(0, cond.noise, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), lab
