"""Rendering of the synthetic scenes behind every lsa demo dataset.

A scene is a textured background with a few filled shapes (circle, square,
triangle, star) placed without overlap. The shape colour and texture are random
and independent of the class, so a model has to learn the outline. Everything is
numpy + cv2 and deterministic given a :class:`numpy.random.Generator`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Every shape the renderer can draw, in a fixed order (class indices follow it).
SHAPES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star')
#: The classes every generator draws unless told otherwise (the demo's and CI's datasets).
DEFAULT_CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle')


@dataclass
class Instance:
    """One rendered object: its class index into the scene's classes and its (H, W) uint8 mask."""

    label: int
    mask: np.ndarray


def check_classes(classes: tuple[str, ...] | list[str], what: str) -> tuple[str, ...]:
    """Validate a class list against :data:`SHAPES` and return it as a tuple."""
    classes = tuple(classes)
    bad = [c for c in classes if c not in SHAPES]
    if not classes or bad or len(set(classes)) != len(classes):
        raise ValueError(f'{what}: classes must be distinct names from {SHAPES}, got {classes}')
    return classes


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A (H, W, 3) uint8 background: smooth, muted colour noise plus faint random stripes.

    Muted (grey-dominated) so that shapes stand out by outline and colour contrast, busy
    enough that a detector cannot rely on a flat background.
    """
    gh, gw = max(2, height // 16), max(2, width // 16)
    coarse = rng.uniform(70, 185, size=(gh, gw, 1)) + rng.uniform(-25, 25, size=(gh, gw, 3))
    img = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    img += stripes[..., None] * rng.uniform(3, 12, size=3).astype(np.float32)
    img += rng.normal(0, 4, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def contrasting_colour(rng: np.random.Generator, under: np.ndarray,
                       min_distance: float = 100.0, tries: int = 32) -> np.ndarray:
    """A random RGB colour at least ``min_distance`` (L2) from the mean of ``under`` (M, 3).

    Falls back to the farthest of ``tries`` candidates, so it always returns.
    """
    mean = under.reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(tries):
        colour = rng.uniform(0, 255, size=3)
        d = float(np.linalg.norm(colour - mean))
        if d >= min_distance:
            return colour
        if d > best_d:
            best, best_d = colour, d
    return best


def shape_mask(rng: np.random.Generator, name: str, height: int, width: int, cx: float,
               cy: float, radius: float) -> np.ndarray:
    """A (H, W) uint8 {0, 1} mask of shape ``name`` centred at (cx, cy), rotated at random."""
    mask = np.zeros((height, width), np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    if name == 'circle':
        cv2.circle(mask, (round(cx), round(cy)), round(radius), 1, thickness=-1)
        return mask
    if name == 'square':
        k, r = 4, radius * 0.95
        radii = np.full(k, r)
    elif name == 'triangle':
        k = 3
        radii = np.full(k, radius * 1.05)
    elif name == 'star':
        k = 10
        radii = np.where(np.arange(k) % 2 == 0, radius * 1.05, radius * 0.45)
    else:
        raise ValueError(f'shape_mask: unknown shape {name!r}; expected one of {SHAPES}')
    t = angle + 2 * np.pi * np.arange(k) / k
    pts = np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def render_scene(rng: np.random.Generator, height: int, width: int, classes: tuple[str, ...],
                 max_objects: int = 3, min_objects: int = 1,
                 radius_range: tuple[float, float] = (0.12, 0.24)) -> tuple[np.ndarray,
                                                                           list[Instance]]:
    """Draw a scene of ``min_objects..max_objects`` non-overlapping shapes.

    Args:
        rng: The random generator (the only source of randomness).
        height: Image height in pixels.
        width: Image width in pixels.
        classes: Shape names; instance labels index into this tuple.
        max_objects: Most objects per image.
        min_objects: Fewest objects per image (placement retries until reached
            or the attempts run out).
        radius_range: Object radius as a fraction of ``min(height, width)``.

    Returns:
        image: (H, W, 3) uint8, BGR as cv2 writes it.
        instances: One :class:`Instance` per drawn object, with disjoint masks.
    """
    image = textured_background(rng, height, width)
    occupied = np.zeros((height, width), np.uint8)
    n_target = int(rng.integers(min_objects, max_objects + 1))
    side = min(height, width)
    instances: list[Instance] = []
    for _ in range(n_target * 30):
        if len(instances) == n_target:
            break
        label = int(rng.integers(len(classes)))
        radius = rng.uniform(*radius_range) * side
        cx = rng.uniform(radius, width - radius)
        cy = rng.uniform(radius, height - radius)
        mask = shape_mask(rng, classes[label], height, width, cx, cy, radius)
        grown = cv2.dilate(mask, np.ones((5, 5), np.uint8))
        if mask.sum() < 16 or (grown & occupied).any():
            continue
        occupied |= mask
        colour = contrasting_colour(rng, image[mask > 0].astype(np.float32))
        shade = colour + rng.normal(0, 8, size=(height, width, 3))
        image = np.where(mask[..., None] > 0, np.clip(shade, 0, 255), image).astype(np.uint8)
        instances.append(Instance(label, mask))
    return image, instances


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` of a binary mask (>= 3 points each)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """The COCO ``[x, y, w, h]`` box enclosing a binary mask's pixels."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]
