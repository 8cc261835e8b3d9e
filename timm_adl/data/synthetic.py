"""A procedural, CUB-like weakly supervised localization data set: the project's built-in demo data.

CUB-200-2011 is hard for CAM because a bird's most discriminative part (the head) is small, while the box
covers the whole bird. Every image here has one object made of the same two parts:

* a **head**: a small disk whose colour is the class (an easy cue; ``p_head_noise`` of the heads take a
  random class's colour);
* a **body**: a larger rotated ellipse filled with stripes whose absolute orientation is the class (a
  weaker cue: harder to learn, lower contrast, random on ``p_body_noise`` of the images), with the head at
  one end;

on a background of smooth colour noise with desaturated distractor shapes (so the head's saturated colour
is unique, as a bird's head markings are). The ground truth box (and mask) is the whole object, head plus
body. Three named designs (:data:`SYNTHETIC_VARIANTS`, :func:`synthetic_variant`):

* ``'default'`` (= ``SyntheticConfig()``): calibrated on ``val`` with the CAM baseline only, so that CAM
  lands in CUB's fair-protocol range (val Top-1 77.2 %, MaxBoxAccV2 58.3 %; docs/synthetic_calibration.md);
* ``'head-only'``: the version-1 design, pixel for pixel: a perfect head and a weak body, the extreme case
  where CAM learns the head only (test: Top-1 100 %, MaxBoxAcc 9.7 %, MaxBoxAccV2 23.3 %);
* ``'pretrain'``: head-less, 12 classes = stripe-orientation range x body-colour family: the stand-in for
  ImageNet pretraining, every cue spread over the whole object.

What varies per image: class, head size and hue jitter, body size, orientation, base colour, stripe
period, phase and contrast, object position, background colours, 3-6 distractors (square, triangle, bar)
and pixel noise; :class:`SyntheticConfig` holds every range.

Everything is vectorised numpy: a few thousand 96 px images render in seconds. The files follow
clovaai/wsolevaluation's metadata layout, so ``create_wsol_dataset('wsol-metadata', ...)`` and
``timm-adl eval`` read them::

    <root>/images/<split>/<class>/<index>.png      images (image ids are relative to <root>)
    <root>/masks/<split>/<class>/<index>.png       object masks (255 = object)
    <root>/metadata/<split>/image_ids.txt          <image_id>
    <root>/metadata/<split>/class_labels.txt       <image_id>,<label>
    <root>/metadata/<split>/image_sizes.txt        <image_id>,<width>,<height>
    <root>/metadata/<split>/localization.txt       <image_id>,<x0>,<y0>,<x1>,<y1>  (inclusive pixels)
    <root>/metadata-masks/<split>/                 the same four files, localization.txt in wsolevaluation's
                                                   mask format (<image_id>,<mask path>,) for PxAP
    <root>/synthetic.json                          the generator settings, for the cache check

Public entry points: :func:`make_synthetic_wsol` (write, or reuse, a data set), :func:`render_synthetic`
(in memory), :class:`SyntheticConfig` (what varies), :func:`synthetic_variant` (the named designs) and
:func:`synthetic_sample_grid` (a picture).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes

__all__ = [
    'SPLITS',
    'SYNTHETIC_VARIANTS',
    'SyntheticConfig',
    'make_synthetic_wsol',
    'render_synthetic',
    'synthetic_sample_grid',
    'synthetic_variant',
]

# Bump when a change to the renderer changes the pixels, so cached sets are regenerated.
GENERATOR_VERSION = 1
SPLITS = ('train', 'train-fullsup', 'val', 'test')
_SPLIT_STREAM = {'train': 0, 'train-fullsup': 1, 'val': 2, 'test': 3}
_CHUNK = 256  # images rendered per vectorised call (bounds memory; part of the seed stream layout)


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator draws. Ranges are ``(low, high)`` of a uniform draw; lengths in pixels."""

    img_size: int = 96
    num_classes: int = 6
    # head: the most discriminative part; colour = class hue (evenly spaced on the colour wheel)
    head_radius: tuple[float, float] = (4.0, 5.5)
    head_hue_jitter: float = 0.02  # fraction of the colour wheel
    # head centre along the body's major axis, at head_along * a + head_offset * r from the body centre:
    # (1, 1) and 0.6 put it at the end, a bird's head; (0, 0.5) and 0 put it inside the body, a marking
    head_along: tuple[float, float] = (1.0, 1.0)
    head_offset: float = 0.6
    # body: the larger, weaker cue
    body_a: tuple[float, float] = (14.0, 22.0)  # semi-major axis
    body_b: tuple[float, float] = (8.0, 13.0)  # semi-minor axis
    stripe_period: tuple[float, float] = (5.0, 7.0)
    stripe_contrast: tuple[float, float] = (30.0, 60.0)  # peak-to-mean amplitude, 0-255 scale
    stripe_jitter: float = 8.0  # degrees around the class orientation 180 * k / num_classes
    p_body_noise: float = 0.3  # fraction of bodies with a uniformly random stripe orientation
    body_tint: float = 0.0  # optional extra body cue: amount of the class colour mixed into the body (0-1)
    # an imperfect head: this fraction of heads take the colour of a uniformly random class
    p_head_noise: float = 0.15
    has_head: bool = True  # False: no head at all (the head-less 'pretrain' set); boxes cover the body only
    # body-colour families: 0 = the body colour is random (no cue); F > 0 = class k has colour family k % F
    # and stripe orientation uniform in the (k // F)-th of num_classes / F equal ranges of 0-180 degrees
    # (a cue spread over the whole object: the 'pretrain' set)
    body_families: int = 0
    # clutter
    clutter_sat: float = 0.5  # saturation kept in background, distractors and body colours (1 = unchanged)
    bg_noise: float = 45.0  # amplitude of the smooth background colour noise
    bg_grid: int = 6  # control points per side of that noise
    distractors: tuple[int, int] = (3, 6)  # count, inclusive
    distractor_size: tuple[float, float] = (5.0, 14.0)  # half-size
    pixel_noise: float = 8.0  # per-pixel Gaussian noise sigma
    # split sizes (images)
    sizes: Mapping[str, int] = field(
        default_factory=lambda: {'train': 3000, 'train-fullsup': 300, 'val': 600, 'test': 1000}
    )

    def __post_init__(self) -> None:
        if not 32 <= self.img_size <= 512:
            raise ValueError(f'img_size must be in [32, 512], got {self.img_size}')
        if not 2 <= self.num_classes <= 64:
            raise ValueError(f'num_classes must be in [2, 64], got {self.num_classes}')
        for name in (
            'head_radius',
            'body_a',
            'body_b',
            'stripe_period',
            'stripe_contrast',
            'distractor_size',
        ):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f'{name} must be a (low, high) range with 0 <= low <= high, got {(lo, hi)}')
        if not 0 <= self.p_head_noise <= 1 or not 0 <= self.p_body_noise <= 1:
            raise ValueError(
                f'p_head_noise and p_body_noise must be in [0, 1], got {self.p_head_noise}, {self.p_body_noise}'
            )
        if self.body_families < 0 or (self.body_families and self.num_classes % self.body_families):
            raise ValueError(
                f'body_families must be 0 or divide num_classes={self.num_classes}, got {self.body_families}'
            )
        for split, n in self.sizes.items():
            if split not in SPLITS:
                raise ValueError(f'unknown split {split!r} in sizes; expected some of {SPLITS}')
            if int(n) < 0:
                raise ValueError(f'split size must be >= 0, got {split}={n}')
        # the largest object must fit: full body length plus head
        reach = self.body_a[1] + self.head_radius[1] * (1 + self.head_offset) + 2
        if 2 * reach >= self.img_size:
            raise ValueError(f'objects up to {2 * reach:.0f} px long do not fit in img_size={self.img_size}')

    def replace(self, **changes: Any) -> SyntheticConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['sizes'] = dict(self.sizes)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# The named designs. 'head-only' spells out every field, so it keeps rendering version 1's pixels whatever
# the dataclass defaults become.
_HEAD_ONLY = SyntheticConfig(
    img_size=96,
    num_classes=6,
    head_radius=(4.0, 5.5),
    head_hue_jitter=0.02,
    head_along=(1.0, 1.0),
    head_offset=0.6,
    body_a=(14.0, 22.0),
    body_b=(8.0, 13.0),
    stripe_period=(5.0, 7.0),
    stripe_contrast=(30.0, 60.0),
    stripe_jitter=8.0,
    p_body_noise=0.5,
    body_tint=0.0,
    p_head_noise=0.0,
    has_head=True,
    body_families=0,
    clutter_sat=0.5,
    bg_noise=45.0,
    bg_grid=6,
    distractors=(3, 6),
    distractor_size=(5.0, 14.0),
    pixel_noise=8.0,
    sizes={'train': 6000, 'train-fullsup': 300, 'val': 600, 'test': 1000},
)
SYNTHETIC_VARIANTS: dict[str, SyntheticConfig] = {
    # calibrated on val so that the CAM baseline lands in CUB's fair-protocol range (docs/synthetic_calibration.md)
    'default': SyntheticConfig(),
    # the extreme case: a perfect, unique head and a weak body; CAM classifies at 100 % from the head alone
    'head-only': _HEAD_ONLY,
    # the ImageNet stand-in for pretraining: no head, 12 classes = 4 stripe-orientation ranges x 3 body-colour
    # families, so every cue is spread over the whole object; same background and clutter as the WSOL sets
    'pretrain': _HEAD_ONLY.replace(
        num_classes=12,
        has_head=False,
        body_families=3,
        p_body_noise=0.0,
        stripe_contrast=(40.0, 80.0),
        sizes={'train': 6000, 'train-fullsup': 0, 'val': 600, 'test': 600},
    ),
}


def synthetic_variant(name: str) -> SyntheticConfig:
    """The named design ``name`` (a key of :data:`SYNTHETIC_VARIANTS`)."""
    try:
        return SYNTHETIC_VARIANTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), SYNTHETIC_VARIANTS, n=3, cutoff=0.0)
        raise ValueError(f'unknown synthetic variant {name!r}; closest valid: {", ".join(close)}') from None


# ---------------------------------------------------------------------------------------------------------
# drawing the parameters


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], n)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB in [0, 255], (N,) arrays -> (N, 3)."""
    h6 = (h % 1.0) * 6.0
    c = v * s
    x = c * (1 - np.abs(h6 % 2 - 1))
    m = v - c
    z = np.zeros_like(h6)
    sector = np.floor(h6).astype(int) % 6
    table = np.stack(
        [
            np.stack([c, x, z], 1),
            np.stack([x, c, z], 1),
            np.stack([z, c, x], 1),
            np.stack([z, x, c], 1),
            np.stack([x, z, c], 1),
            np.stack([c, z, x], 1),
        ],
        0,
    )
    rgb = table[sector, np.arange(len(h6))]
    return (rgb + m[:, None]) * 255.0


def _desaturate(rgb: np.ndarray, keep: float) -> np.ndarray:
    grey = rgb.mean(axis=-1, keepdims=True)
    return grey + keep * (rgb - grey)


def _sample_params(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every random choice of ``n`` images except pixel noise, drawn up front in a fixed order."""
    k = cfg.num_classes
    p: dict[str, np.ndarray] = {}
    p['label'] = rng.integers(0, k, n)
    # head
    p['head_r'] = _uniform(rng, cfg.head_radius, n)
    hue = p['label'] / k + rng.uniform(-cfg.head_hue_jitter, cfg.head_hue_jitter, n)
    p['head_rgb'] = _hsv_to_rgb(hue, rng.uniform(0.85, 1.0, n), rng.uniform(0.85, 1.0, n))
    # body
    p['a'] = _uniform(rng, cfg.body_a, n)
    p['b'] = np.minimum(_uniform(rng, cfg.body_b, n), p['a'])
    p['theta'] = rng.uniform(0, 2 * np.pi, n)  # body axis; the head sits at +theta
    class_deg = 180.0 * p['label'] / k + rng.uniform(-cfg.stripe_jitter, cfg.stripe_jitter, n)
    random_deg = rng.uniform(0, 180.0, n)
    p['body_noise'] = rng.random(n) < cfg.p_body_noise
    p['stripe_phi'] = np.deg2rad(np.where(p['body_noise'], random_deg, class_deg))
    p['stripe_period'] = _uniform(rng, cfg.stripe_period, n)
    p['stripe_phase'] = rng.uniform(0, 2 * np.pi, n)
    p['stripe_amp'] = _uniform(rng, cfg.stripe_contrast, n)
    body_rgb = rng.uniform(60, 200, (n, 3))
    tint = _hsv_to_rgb(p['label'] / k, np.ones(n), np.full(n, 0.8))
    body_rgb = _desaturate(body_rgb, cfg.clutter_sat)
    p['body_rgb'] = (1 - cfg.body_tint) * body_rgb + cfg.body_tint * tint
    if not cfg.has_head:
        p['head_r'] = np.zeros(n)
    # placement: the whole object inside the image with a 1 px margin
    ca, sa = np.cos(p['theta']), np.sin(p['theta'])
    ex = np.sqrt((p['a'] * ca) ** 2 + (p['b'] * sa) ** 2)
    ey = np.sqrt((p['a'] * sa) ** 2 + (p['b'] * ca) ** 2)
    d = p['a'] * _uniform(rng, cfg.head_along, n) + cfg.head_offset * p['head_r']
    hx, hy = d * ca, d * sa
    x_lo = np.minimum(-ex, hx - p['head_r'])
    x_hi = np.maximum(ex, hx + p['head_r'])
    y_lo = np.minimum(-ey, hy - p['head_r'])
    y_hi = np.maximum(ey, hy + p['head_r'])
    size = cfg.img_size
    p['cx'] = rng.uniform(1 - x_lo, size - 2 - x_hi)
    p['cy'] = rng.uniform(1 - y_lo, size - 2 - y_hi)
    p['hx'], p['hy'] = p['cx'] + hx, p['cy'] + hy
    # background
    g = cfg.bg_grid
    p['bg_rgb'] = rng.uniform(70, 190, (n, 3))
    p['bg_grid'] = rng.uniform(-cfg.bg_noise, cfg.bg_noise, (n, g, g, 3))
    # distractors: up to the maximum count, the extra ones switched off
    m = cfg.distractors[1]
    p['d_on'] = np.arange(m)[None, :] < rng.integers(cfg.distractors[0], cfg.distractors[1] + 1, n)[:, None]
    p['d_kind'] = rng.integers(0, 3, (n, m))  # 0 square, 1 triangle, 2 bar
    p['d_x'] = rng.uniform(0, size, (n, m))
    p['d_y'] = rng.uniform(0, size, (n, m))
    p['d_s'] = rng.uniform(cfg.distractor_size[0], cfg.distractor_size[1], (n, m))
    p['d_rot'] = rng.uniform(0, 2 * np.pi, (n, m))
    p['d_rgb'] = rng.uniform(20, 235, (n, m, 3))
    _sample_new_cues(cfg, p, rng)
    return p


def _sample_new_cues(cfg: SyntheticConfig, p: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """The cues added after version 1 (noisy heads, body-colour families).

    Drawn after every version-1 draw, and only when switched on, so a config without them (the 'head-only'
    variant) consumes the random stream exactly as before and renders the very same pixels.
    """
    n, k = len(p['label']), cfg.num_classes
    if cfg.p_head_noise > 0:
        noisy = rng.random(n) < cfg.p_head_noise
        other = rng.integers(0, k, n)
        hue = other / k + rng.uniform(-cfg.head_hue_jitter, cfg.head_hue_jitter, n)
        noisy_rgb = _hsv_to_rgb(hue, rng.uniform(0.85, 1.0, n), rng.uniform(0.85, 1.0, n))
        p['head_rgb'] = np.where(noisy[:, None], noisy_rgb, p['head_rgb'])
    if cfg.body_families:
        fam = p['label'] % cfg.body_families
        ranges = k // cfg.body_families
        deg = 180.0 * (p['label'] // cfg.body_families + rng.random(n)) / ranges
        p['stripe_phi'] = np.deg2rad(np.where(p['body_noise'], np.rad2deg(p['stripe_phi']), deg))
        # a colour family: grey plus a push of 45-70 towards the family's hue, small per-channel jitter
        direction = _hsv_to_rgb(fam / cfg.body_families, np.ones(n), np.ones(n)) / 255.0
        direction -= direction.mean(axis=1, keepdims=True)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        rgb = rng.uniform(90, 160, (n, 1)) + rng.uniform(45, 70, (n, 1)) * direction
        p['body_rgb'] = _desaturate(rgb + rng.uniform(-12, 12, (n, 3)), cfg.clutter_sat)


# ---------------------------------------------------------------------------------------------------------
# rendering


def _soft(signed_dist: np.ndarray) -> np.ndarray:
    """Coverage from a signed distance (negative inside): a 1 px ramp, so edges are anti-aliased."""
    return np.clip(0.5 - signed_dist, 0.0, 1.0)


def _render_chunk(
    cfg: SyntheticConfig, p: dict[str, np.ndarray], noise_rng: np.random.Generator, draw_head: bool
) -> tuple[np.ndarray, np.ndarray]:
    size = cfg.img_size
    coords = np.arange(size, dtype=np.float32)
    xx = coords[None, None, :]
    yy = coords[None, :, None]

    def col(a: np.ndarray) -> np.ndarray:  # (n,) -> (n, 1, 1)
        return a.astype(np.float32)[:, None, None]

    # background: base colour + bilinear low-frequency noise (separable interpolation matrices)
    g = cfg.bg_grid
    pos = np.clip((coords + 0.5) * g / size - 0.5, 0, g - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, g - 1)
    w = (pos - lo).astype(np.float32)
    interp = np.zeros((size, g), np.float32)
    interp[np.arange(size), lo] += 1 - w
    interp[np.arange(size), hi] += w
    noise = np.einsum('hy,nyxc,wx->nhwc', interp, p['bg_grid'].astype(np.float32), interp, optimize=True)
    img = _desaturate(p['bg_rgb'].astype(np.float32)[:, None, None, :] + noise, cfg.clutter_sat)

    # distractors
    for j in range(p['d_on'].shape[1]):
        dx = xx - col(p['d_x'][:, j])
        dy = yy - col(p['d_y'][:, j])
        c, s = col(np.cos(p['d_rot'][:, j])), col(np.sin(p['d_rot'][:, j]))
        u, v = dx * c + dy * s, -dx * s + dy * c
        half = col(p['d_s'][:, j])
        square = np.maximum(np.abs(u), np.abs(v)) - half
        # triangle: intersection of three half-planes at 120 degrees
        tri = (
            np.max(
                np.stack(
                    [u * np.cos(t) + v * np.sin(t) for t in (np.pi / 2, np.pi / 2 + 2.1, np.pi / 2 - 2.1)]
                ),
                axis=0,
            )
            - 0.5 * half
        )
        bar = np.maximum(np.abs(u) - half, np.abs(v) - 1.5)
        kind = p['d_kind'][:, j][:, None, None]
        dist = np.where(kind == 0, square, np.where(kind == 1, tri, bar))
        alpha = (_soft(dist) * col(p['d_on'][:, j].astype(np.float32)))[..., None]
        rgb = _desaturate(p['d_rgb'][:, j].astype(np.float32), cfg.clutter_sat)[:, None, None, :]
        img = img + alpha * (rgb - img)

    # body: striped ellipse
    dx, dy = xx - col(p['cx']), yy - col(p['cy'])
    c, s = col(np.cos(p['theta'])), col(np.sin(p['theta']))
    u, v = dx * c + dy * s, -dx * s + dy * c
    a, b = col(p['a']), col(p['b'])
    radial = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    body_alpha = _soft((radial - 1) * b)  # approximate distance, exact along the minor axis
    phi = p['stripe_phi']
    wave = np.sin(
        2 * np.pi * (dx * col(np.cos(phi)) + dy * col(np.sin(phi))) / col(p['stripe_period'])
        + col(p['stripe_phase'])
    )
    body = p['body_rgb'].astype(np.float32)[:, None, None, :] + (col(p['stripe_amp']) * wave)[..., None]
    img = img + body_alpha[..., None] * (body - img)

    # head: class-coloured disk
    hr = col(p['head_r'])
    head_alpha = _soft(np.sqrt((xx - col(p['hx'])) ** 2 + (yy - col(p['hy'])) ** 2) - hr)
    if not cfg.has_head:
        head_alpha = np.zeros_like(head_alpha)
    if draw_head:
        img = img + head_alpha[..., None] * (p['head_rgb'].astype(np.float32)[:, None, None, :] - img)
    mask = np.maximum(body_alpha, head_alpha) >= 0.5

    img = img + noise_rng.normal(0.0, cfg.pixel_noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def _mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Inclusive ``x0 y0 x1 y1`` of each (H, W) mask in an (N, H, W) stack."""
    cols, rows = mask.any(axis=1), mask.any(axis=2)
    w, h = mask.shape[2], mask.shape[1]
    x0 = cols.argmax(axis=1)
    x1 = w - 1 - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = h - 1 - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def _split_seed(seed: int, split: str) -> np.random.SeedSequence:
    if split not in _SPLIT_STREAM:
        raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')
    return np.random.SeedSequence([int(seed), _SPLIT_STREAM[split], GENERATOR_VERSION])


def render_synthetic(
    cfg: SyntheticConfig, split: str, n: int | None = None, seed: int = 0, draw_head: bool = True
) -> dict[str, np.ndarray]:
    """Render ``n`` images of ``split`` in memory (default: ``cfg.sizes[split]``).

    Returns ``images`` (N, H, W, 3) uint8, ``labels`` (N,), ``boxes`` (N, 4) inclusive pixels, ``masks``
    (N, H, W) bool and ``head_boxes`` (N, 4). ``draw_head=False`` renders the very same images with the
    head left out (same random stream), for the "Top-1 with the head erased" diagnostic; boxes and masks
    still describe the whole object.
    """
    n = int(cfg.sizes.get(split, 0) if n is None else n)
    num_chunks = (n + _CHUNK - 1) // _CHUNK
    images = np.empty((n, cfg.img_size, cfg.img_size, 3), np.uint8)
    masks = np.empty((n, cfg.img_size, cfg.img_size), bool)
    parts = []
    # one random stream per chunk of _CHUNK images, parameters always drawn for a whole chunk: the first
    # m images of a split are the same whatever its size (the figure re-renders a few test images)
    for i, ss in enumerate(_split_seed(seed, split).spawn(num_chunks)):
        rng = np.random.default_rng(ss)
        sl = slice(i * _CHUNK, min(n, (i + 1) * _CHUNK))
        chunk = {k: v[: sl.stop - sl.start] for k, v in _sample_params(cfg, _CHUNK, rng).items()}
        images[sl], masks[sl] = _render_chunk(cfg, chunk, rng, draw_head)
        parts.append(chunk)
    p = (
        {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}
        if parts
        else _sample_params(cfg, 0, np.random.default_rng(0))
    )
    r = p['head_r']
    head_boxes = np.stack([p['hx'] - r, p['hy'] - r, p['hx'] + r, p['hy'] + r], axis=1)
    return {
        'images': images,
        'labels': p['label'].astype(np.int64),
        'boxes': _mask_boxes(masks) if n else np.zeros((0, 4), np.int64),
        'masks': masks,
        'head_boxes': np.clip(head_boxes, 0, cfg.img_size - 1),
    }


# ---------------------------------------------------------------------------------------------------------
# on disk


def _manifest(cfg: SyntheticConfig, seed: int) -> dict[str, Any]:
    return {'generator_version': GENERATOR_VERSION, 'seed': int(seed), 'config': cfg.to_dict()}


def _write_text(path: Path, lines: Sequence[str]) -> None:
    path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')


def _write_split(tmp_root: Path, cfg: SyntheticConfig, split: str, seed: int) -> None:
    import cv2  # imported here: only writing needs it

    data = render_synthetic(cfg, split, seed=seed)
    ids, labels, sizes, boxes, mask_lines = [], [], [], [], []
    for i, (img, label, box, mask) in enumerate(
        zip(data['images'], data['labels'], data['boxes'], data['masks'], strict=True)
    ):
        rel = f'{split}/{int(label):02d}/{i:05d}.png'
        image_id = f'images/{rel}'
        mask_id = f'masks/{rel}'
        for sub, arr in ((image_id, img[:, :, ::-1]), (mask_id, mask.astype(np.uint8) * 255)):
            path = tmp_root / sub
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
                raise OSError(f'cannot write {path}')
        ids.append(image_id)
        labels.append(f'{image_id},{int(label)}')
        sizes.append(f'{image_id},{cfg.img_size},{cfg.img_size}')
        boxes.append(f'{image_id},{box[0]},{box[1]},{box[2]},{box[3]}')
        mask_lines.append(f'{image_id},{mask_id},')
    for folder, localization in (('metadata', boxes), ('metadata-masks', mask_lines)):
        meta = tmp_root / folder / split
        meta.mkdir(parents=True, exist_ok=True)
        _write_text(meta / 'image_ids.txt', ids)
        _write_text(meta / 'class_labels.txt', labels)
        _write_text(meta / 'image_sizes.txt', sizes)
        _write_text(meta / 'localization.txt', localization)


def make_synthetic_wsol(
    root: str | os.PathLike, seed: int = 0, config: SyntheticConfig | None = None, overwrite: bool = False
) -> Path:
    """Write the synthetic WSOL set to ``root`` (all four splits), or reuse it if it is already there.

    A set is reused when ``root/synthetic.json`` records the same seed, settings and generator version;
    otherwise it is rendered into a temporary directory beside ``root`` and moved into place, so a killed
    run never leaves a half-written set that a later run would trust. Returns ``root``; the metadata root
    is ``root / 'metadata'`` (boxes) or ``root / 'metadata-masks'`` (masks).
    """
    cfg = config or SyntheticConfig()
    root = Path(root)
    manifest = _manifest(cfg, seed)
    stamp = root / 'synthetic.json'
    if not overwrite and stamp.is_file():
        try:
            if json.loads(stamp.read_text(encoding='utf-8')) == manifest:
                return root
        except (OSError, ValueError):
            pass  # unreadable stamp: regenerate
    if root.exists() and any(root.iterdir()) and not stamp.is_file():
        raise FileExistsError(
            f'{root} exists and is not a synthetic WSOL set (no synthetic.json); refusing to overwrite it'
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        for split in SPLITS:
            _write_split(tmp, cfg, split, seed)
        (tmp / 'synthetic.json').write_text(json.dumps(manifest, indent=1) + '\n', encoding='utf-8')
        if root.exists():
            old = root.parent / f'.{root.name}.old-{os.getpid()}'
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def synthetic_sample_grid(
    cfg: SyntheticConfig | None = None, seed: int = 0, rows: int = 3, cols: int = 8, scale: int = 2
) -> np.ndarray:
    """An RGB picture (uint8 array) of ``rows * cols`` test images with their boxes (red) and heads (white)."""
    import cv2

    cfg = cfg or SyntheticConfig()
    data = render_synthetic(cfg, 'test', n=rows * cols, seed=seed)
    size = cfg.img_size * scale
    grid = np.full((rows * (size + 4) + 4, cols * (size + 4) + 4, 3), 255, np.uint8)
    for i in range(rows * cols):
        img = cv2.resize(data['images'][i], (size, size), interpolation=cv2.INTER_NEAREST)
        x0, y0, x1, y1 = (int(v) * scale for v in data['boxes'][i])
        cv2.rectangle(img, (x0, y0), (x1 + scale - 1, y1 + scale - 1), (255, 0, 0), 1)
        cv2.putText(
            img,
            f'class {int(data["labels"][i])}',
            (3, 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.35,
            (255, 255, 255),
            1,
        )
        r, c = divmod(i, cols)
        grid[
            4 + r * (size + 4) : 4 + r * (size + 4) + size, 4 + c * (size + 4) : 4 + c * (size + 4) + size
        ] = img
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m timm_adl.data.synthetic OUT.png [--variant NAME]``: write a picture of samples (the README's)."""
    import argparse

    import cv2

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('out', help='PNG file to write')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--variant', default='default', help=f'one of {", ".join(SYNTHETIC_VARIANTS)}')
    args = parser.parse_args(argv)
    try:
        cfg = synthetic_variant(args.variant)
    except ValueError as err:
        parser.error(str(err))
    grid = synthetic_sample_grid(cfg, seed=args.seed)
    ok, png = cv2.imencode('.png', grid[:, :, ::-1])
    if not ok:
        raise OSError(f'cannot encode {args.out} as PNG')
    atomic_write_bytes(args.out, png.tobytes(), durable=False)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
