"""The props of the synthetic streets: primitives, and builders for buildings, trees, bushes, lights, fences.

Each builder returns a ``Group`` of primitives that carry their ADE20K SceneParsing class id
(``structvpr_core/taxonomies/ade20k.yaml``), so that the label map of a view is exact by
construction. ``synthetic_world`` lays them out along a street.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ADE20K SceneParsing ids (0 = unlabelled, 1..150), checked against taxonomies/ade20k.yaml by the tests.
ADE = {
    "building": 2,
    "sky": 3,
    "tree": 5,
    "road": 7,
    "grass": 10,
    "sidewalk": 12,
    "person": 13,
    "plant": 18,
    "car": 21,
    "house": 26,
    "fence": 33,
    "signboard": 44,
    "bus": 81,
    "streetlight": 88,
}

FACADE_COLOURS = np.array(
    [  # BGR: plaster, brick, sandstone, concrete, painted
        (180, 200, 215),
        (60, 80, 150),
        (120, 170, 200),
        (150, 150, 150),
        (170, 190, 190),
        (90, 110, 170),
        (200, 210, 220),
        (110, 130, 130),
        (140, 160, 120),
        (160, 130, 140),
        (80, 100, 120),
        (200, 180, 150),
    ],
    dtype=np.float32,
)
SIGN_COLOURS = np.array(
    [(40, 40, 200), (200, 80, 30), (40, 180, 220), (60, 160, 60), (220, 220, 220)], dtype=np.float32
)


@dataclass
class Prim:
    """One drawable: a planar polygon (``pts`` k×3), a disc (``pts`` 1×3 centre + ``radius``) or a line."""

    kind: str  # "poly" | "disc" | "line"
    pts: np.ndarray
    label: int
    material: str  # how appearance changes it: facade, window, road, veg, sky, ...
    colour: np.ndarray  # base BGR colour (float 0..255)
    radius: float = 0.0  # disc radius / line width (metres)
    u: float = 0.0  # per-primitive random number (vegetation density, lit windows)


@dataclass
class Group:
    """Primitives drawn together (a building, a tree, a car); groups are painted far to near."""

    anchor: np.ndarray  # a world point whose camera depth orders the group
    prims: list[Prim] = field(default_factory=list)
    layer: int = 1  # 0: ground, 1: buildings, 2: objects (sorted by depth inside a layer)


def quad_x(x, y0, y1, z0, z1):
    """Vertical quad in the plane X = x."""
    return np.array([(x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)], dtype=np.float64)


def quad_z(z, x0, x1, y0, y1):
    """Vertical quad in the plane Z = z (faces the camera)."""
    return np.array([(x0, y0, z), (x0, y1, z), (x1, y1, z), (x1, y0, z)], dtype=np.float64)


def ground_quad(x0, x1, z0, z1, y=0.0):
    return np.array([(x0, y, z0), (x1, y, z0), (x1, y, z1), (x0, y, z1)], dtype=np.float64)


def make_building(rng, side: int, x_face: float, z0: float, z1: float, height: float) -> Group:
    """One block: its end wall, façade, window grid, door and perhaps a shop sign."""
    colour = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))] * rng.uniform(0.85, 1.1)
    house = height < 9 and rng.random() < 0.5
    label = ADE["house"] if house else ADE["building"]
    depth = 12.0
    g = Group(anchor=np.array([side * x_face, 0.0, z0]), layer=1)
    back = side * (x_face + depth)
    g.prims.append(
        Prim(
            "poly",
            quad_z(z0, min(back, side * x_face), max(back, side * x_face), 0, height),
            label,
            "wall_end",
            colour * 0.8,
        )
    )
    g.prims.append(Prim("poly", quad_x(side * x_face, 0, height, z0, z1), label, "facade", colour))
    if house:  # a gable seen side-on: a triangle on top of the façade
        mid = (z0 + z1) / 2
        roof = np.array(
            [
                (side * x_face, height, z0),
                (side * x_face, height + rng.uniform(1.5, 3.5), mid),
                (side * x_face, height, z1),
            ],
            dtype=np.float64,
        )
        g.prims.append(Prim("poly", roof, label, "roof", np.array((50, 60, 120), np.float32) * rng.uniform(0.7, 1.2)))
    # Windows: a grid whose spacing, size and shape vary per block (a structural signature).
    floor_h = rng.uniform(2.8, 3.6)
    spacing = rng.uniform(1.8, 3.2)
    win_w = spacing * rng.uniform(0.35, 0.7)
    win_h = floor_h * rng.uniform(0.35, 0.6)
    shop = rng.random() < 0.45 and height > 5
    first = 1 if shop else 0
    win_colour = np.array((70, 60, 50), np.float32) * rng.uniform(0.6, 1.6)
    n_floors = int((height - 0.8) // floor_h)
    n_cols = int((z1 - z0 - 0.6) // spacing)
    for f in range(first, n_floors):
        y0 = f * floor_h + (floor_h - win_h) * 0.6
        for c in range(n_cols):
            zc = z0 + 0.3 + spacing * (c + 0.5)
            g.prims.append(
                Prim(
                    "poly",
                    quad_x(side * (x_face - 0.01), y0, y0 + win_h, zc - win_w / 2, zc + win_w / 2),
                    label,
                    "window",
                    win_colour,
                    u=float(rng.random()),
                )
            )
    if shop:  # ground-floor shop window band and a sign above it
        g.prims.append(
            Prim(
                "poly",
                quad_x(side * (x_face - 0.01), 0.3, 2.6, z0 + 0.5, z1 - 0.5),
                label,
                "window",
                win_colour * 1.2,
                u=float(rng.random()),
            )
        )
        sz0 = rng.uniform(z0 + 0.5, max(z0 + 0.6, z1 - 4.0))
        g.prims.append(
            Prim(
                "poly",
                quad_x(side * (x_face - 0.02), 2.8, 3.5, sz0, min(z1 - 0.3, sz0 + rng.uniform(2, 5))),
                ADE["signboard"],
                "sign",
                SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))],
            )
        )
    else:
        dz = rng.uniform(z0 + 0.5, max(z0 + 0.6, z1 - 1.8))
        g.prims.append(
            Prim(
                "poly",
                quad_x(side * (x_face - 0.01), 0, 2.2, dz, dz + 1.2),
                label,
                "door",
                np.array((40, 50, 70), np.float32) * rng.uniform(0.6, 1.5),
            )
        )
    return g


def make_tree(rng, x: float, z: float) -> Group:
    g = Group(anchor=np.array([x, 0.0, z]), layer=2)
    trunk_h = rng.uniform(2.0, 3.5)
    crown = rng.uniform(1.4, 2.8)
    g.prims.append(
        Prim(
            "poly",
            quad_z(z, x - 0.15, x + 0.15, 0, trunk_h + crown),
            ADE["tree"],
            "trunk",
            np.array((40, 60, 90), np.float32),
        )
    )
    # Bare branches (seen in winter when the leaves are gone; hidden by leaves otherwise).
    for _ in range(rng.integers(3, 6)):
        a = rng.uniform(-1.2, 1.2)
        y0 = trunk_h + rng.uniform(0, crown * 0.6)
        end = (x + np.sin(a) * crown * 0.9, y0 + np.cos(a) * crown * 0.8, z)
        g.prims.append(
            Prim(
                "line",
                np.array([(x, y0, z), end]),
                ADE["tree"],
                "trunk",
                np.array((40, 60, 90), np.float32),
                radius=0.06,
            )
        )
    for _ in range(rng.integers(4, 8)):  # the crown: overlapping leaf clusters
        c = (x + rng.normal(0, crown * 0.45), trunk_h + crown * 0.6 + rng.normal(0, crown * 0.35), z)
        g.prims.append(
            Prim(
                "disc",
                np.array([c]),
                ADE["tree"],
                "leaves",
                np.zeros(3, np.float32),
                radius=crown * rng.uniform(0.45, 0.75),
                u=float(rng.random()),
            )
        )
    return g


def make_bush(rng, x: float, z: float) -> Group:
    g = Group(anchor=np.array([x, 0.0, z]), layer=2)
    for _ in range(rng.integers(2, 4)):
        c = (x + rng.normal(0, 0.4), rng.uniform(0.3, 0.6), z)
        g.prims.append(
            Prim(
                "disc",
                np.array([c]),
                ADE["plant"],
                "leaves",
                np.zeros(3, np.float32),
                radius=rng.uniform(0.4, 0.7),
                u=float(rng.random()) * 0.6,
            )
        )
    return g


def make_streetlight(rng, x: float, z: float, side: int) -> Group:
    g = Group(anchor=np.array([x, 0.0, z]), layer=2)
    h = rng.uniform(5.0, 7.0)
    grey = np.array((70, 70, 70), np.float32)
    g.prims.append(Prim("poly", quad_z(z, x - 0.08, x + 0.08, 0, h), ADE["streetlight"], "metal", grey))
    arm = x - side * 1.2
    g.prims.append(Prim("poly", quad_z(z, min(x, arm), max(x, arm), h - 0.12, h), ADE["streetlight"], "metal", grey))
    g.prims.append(
        Prim(
            "poly",
            quad_z(z, arm - 0.3, arm + 0.3, h - 0.35, h - 0.1),
            ADE["streetlight"],
            "lamp",
            np.array((200, 220, 220), np.float32),
        )
    )
    return g


def make_fence(rng, x: float, z0: float, z1: float) -> Group:
    g = Group(anchor=np.array([x, 0.0, z0]), layer=1)
    g.prims.append(
        Prim(
            "poly",
            quad_x(x, 0, rng.uniform(1.0, 2.0), z0, z1),
            ADE["fence"],
            "fence",
            np.array((60, 90, 110), np.float32) * rng.uniform(0.7, 1.3),
        )
    )
    return g
