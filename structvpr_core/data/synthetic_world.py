"""Procedural street scenes for the synthetic benchmark: the *structure* of one place.

A place is a straight street seen along +Z (metres; X to the right, Y up, ground at Y = 0):
a road, sidewalks or grass verges, rows of buildings of varied size and façade on both sides,
a skyline across the far end, street lights, signs, fences, trees and bushes. Everything here
is fixed per place (drawn from a generator seeded by (seed, place)); appearance (light, season,
fog) and moving objects (cars, people) belong to each view and are added by ``synthetic_render``.

The props (buildings, trees, lights, fences as ``Group``s of labelled primitives) are built by
``synthetic_props``; this module lays them out along a street.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synthetic_props import (
    ADE,
    FACADE_COLOURS,
    Group,
    Prim,
    ground_quad,
    make_building,
    make_bush,
    make_fence,
    make_streetlight,
    make_tree,
    quad_z,
)


@dataclass
class World:
    groups: list[Group]
    road_half: float
    walk: float
    horizon_shift: float  # camera pitch offset (fraction of image height) of this place


def make_world(rng: np.random.Generator, length: float = 90.0) -> World:
    """The static structure of one place."""
    road_half = rng.uniform(3.0, 5.5)
    walk = rng.uniform(2.0, 4.0)
    verge = rng.random() < 0.35  # a grass strip between road and sidewalk on some streets
    x_face = road_half + walk
    groups: list[Group] = []
    ground = Group(anchor=np.zeros(3), layer=0)
    ground.prims.append(
        Prim(
            "poly", ground_quad(-300, 300, -20, 400), ADE["sidewalk"], "pavement", np.array((140, 150, 155), np.float32)
        )
    )
    ground.prims.append(
        Prim(
            "poly",
            ground_quad(-x_face, x_face, -20, 400),
            ADE["sidewalk"],
            "pavement",
            np.array((150, 160, 165), np.float32) * rng.uniform(0.85, 1.1),
        )
    )
    if verge:
        for s in (-1, 1):
            xs = sorted((s * road_half, s * (road_half + walk * 0.5)))
            ground.prims.append(
                Prim(
                    "poly",
                    ground_quad(xs[0], xs[1], -20, 400),
                    ADE["grass"],
                    "grass",
                    np.array((60, 140, 80), np.float32),
                )
            )
    ground.prims.append(
        Prim(
            "poly",
            ground_quad(-road_half, road_half, -20, 400),
            ADE["road"],
            "road",
            np.array((85, 85, 90), np.float32) * rng.uniform(0.8, 1.2),
        )
    )
    dash, gap = rng.uniform(2, 4), rng.uniform(3, 7)
    z = -10.0
    while z < 150:  # centre line (paint is part of the road)
        ground.prims.append(
            Prim(
                "poly",
                ground_quad(-0.08, 0.08, z, z + dash, 0.0),
                ADE["road"],
                "marking",
                np.array((220, 230, 230), np.float32),
            )
        )
        z += dash + gap
    groups.append(ground)
    # The skyline across the far end of the street: frontal blocks of varied height.
    x = -60.0
    far = length + 30
    while x < 60:
        w = rng.uniform(6, 20)
        g = Group(anchor=np.array([x, 0.0, far]), layer=1)
        colour = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))]
        g.prims.append(Prim("poly", quad_z(far, x, x + w, 0, rng.uniform(8, 45)), ADE["building"], "wall_end", colour))
        groups.append(g)
        x += w
    for side in (-1, 1):
        z = rng.uniform(-6, 2)
        while z < length:
            w = rng.uniform(6, 22)
            if rng.random() < 0.15:  # an open lot, sometimes fenced
                if rng.random() < 0.6:
                    groups.append(make_fence(rng, side * x_face, z, z + w))
            else:
                groups.append(
                    make_building(
                        rng,
                        side,
                        x_face + rng.uniform(-0.3, 1.5),
                        z,
                        z + w,
                        rng.uniform(5, 30) if rng.random() < 0.85 else rng.uniform(30, 55),
                    )
                )
            z += w
        # Street furniture and vegetation along the kerb.
        kerb = side * (road_half + 0.7)
        z = rng.uniform(8, 14)  # nothing right in front of the lens: it would hide the place
        tree_step = rng.uniform(8, 20) if rng.random() < 0.8 else 1e9
        while z < length:
            groups.append(make_tree(rng, kerb + side * rng.uniform(0, 0.5), z))
            z += tree_step * rng.uniform(0.8, 1.2)
        z = rng.uniform(5, 20)
        light_step = rng.uniform(15, 35)
        while z < length:
            groups.append(make_streetlight(rng, side * (road_half + 0.3), z, side))
            z += light_step
        for _ in range(rng.integers(0, 4)):
            groups.append(make_bush(rng, side * (x_face - 0.6), rng.uniform(5, length * 0.6)))
    return World(groups=groups, road_half=road_half, walk=walk, horizon_shift=float(rng.uniform(-0.06, 0.06)))


def add_traffic(world: World, rng: np.random.Generator, near_z: float = 3.0) -> list[Group]:
    """Moving objects of one view: cars and a bus on the road, people on the sidewalks."""
    groups = []
    for _ in range(rng.integers(0, 5)):
        bus = rng.random() < 0.12
        lane = rng.choice([-1, 1]) * world.road_half * rng.uniform(0.3, 0.6)
        z = rng.uniform(near_z + 3, 60)
        w, h = (2.5, 3.2) if bus else (1.8, rng.uniform(1.3, 1.7))
        label = ADE["bus"] if bus else ADE["car"]
        colour = np.array(rng.uniform(20, 230, 3), np.float32)
        g = Group(anchor=np.array([lane, 0.0, z]), layer=2)
        g.prims.append(
            Prim(
                "poly",
                quad_z(z, lane - w / 2, lane + w / 2, 0.3, h * (0.95 if bus else 0.6)),
                label,
                "car_body",
                colour,
            )
        )
        cab = (
            quad_z(z, lane - w * 0.4, lane + w * 0.4, h * 0.6, h)
            if not bus
            else quad_z(z, lane - w / 2, lane + w / 2, h * 0.95, h)
        )
        g.prims.append(
            Prim("poly", cab, label, "car_glass" if not bus else "car_body", colour * 0.5 if not bus else colour)
        )
        for dx in (-w * 0.35, w * 0.35):
            g.prims.append(
                Prim(
                    "disc",
                    np.array([(lane + dx, 0.32, z - 0.01)]),
                    label,
                    "tyre",
                    np.array((25, 25, 25), np.float32),
                    radius=0.32,
                )
            )
        for dx in (-w * 0.38, w * 0.38):
            g.prims.append(
                Prim(
                    "disc",
                    np.array([(lane + dx, h * 0.45, z - 0.02)]),
                    label,
                    "car_light",
                    np.array((40, 40, 170), np.float32),
                    radius=0.1,
                )
            )
        groups.append(g)
    for _ in range(rng.integers(0, 6)):
        side = rng.choice([-1, 1])
        x = side * (world.road_half + world.walk * rng.uniform(0.2, 0.8))
        z = rng.uniform(near_z + 2, 40)
        h = rng.uniform(1.55, 1.9)
        g = Group(anchor=np.array([x, 0.0, z]), layer=2)
        cloth = np.array(rng.uniform(20, 220, 3), np.float32)
        g.prims.append(
            Prim(
                "poly",
                quad_z(z, x - 0.18, x + 0.18, 0, h * 0.5),
                ADE["person"],
                "cloth",
                np.array(rng.uniform(20, 120, 3), np.float32),
            )
        )
        g.prims.append(Prim("poly", quad_z(z, x - 0.25, x + 0.25, h * 0.5, h * 0.86), ADE["person"], "cloth", cloth))
        g.prims.append(
            Prim(
                "disc",
                np.array([(x, h * 0.93, z)]),
                ADE["person"],
                "skin",
                np.array((120, 150, 190), np.float32) * rng.uniform(0.5, 1.1),
                radius=0.12,
            )
        )
        groups.append(g)
    return groups
