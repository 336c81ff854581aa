"""Procedural cartoon faces from named, interpretable latent coordinates (the default backend).

Every coordinate ``z_k ~ N(0, 1)`` is turned into a drawing parameter ``p_k = Phi(z_k)`` in
``(0, 1)`` through the standard normal CDF, so the whole prior is used evenly: equal prior mass
gives equal parameter range. The exception is ``apparent_age``, which is measured in years,
``39 + 13 * z_age``, because the safety rule (never show an apparent age under 18) must be
stated on it exactly. Categorical features (hair style, glasses, beard) cut ``p_k`` into bands.

Faces are drawn with ``PIL.ImageDraw`` on a 512x512 canvas and reduced to 256x256 by 2x2
averaging, which anti-aliases every edge at a fraction of the cost of a LANCZOS filter; there is
no randomness, so one latent always gives the same pixels.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from engine.latent._prior import (
    apparent_age_from_coordinate,
    check_batch,
    check_single,
    project_into_box,
    sample_truncated_prior,
    underage_or_invalid,
)

__all__ = ["AGE_INDEX", "DIMENSION_NAMES", "ProceduralFaceSpace"]

#: Coordinate names, in latent order. ``apparent_age`` is first in every backend.
DIMENSION_NAMES: tuple[str, ...] = (
    "apparent_age",
    "face_width",
    "face_length",
    "jaw_shape",
    "skin_tone",
    "hair_style",
    "hair_length",
    "hair_hue",
    "hair_lightness",
    "eye_size",
    "eye_spacing",
    "eye_colour",
    "brow_thickness",
    "brow_angle",
    "nose_length",
    "nose_width",
    "mouth_width",
    "smile",
    "lip_colour",
    "glasses",
    "beard",
    "ear_size",
    "cheek_blush",
    "background_hue",
)

#: Index of ``apparent_age`` in the latent.
AGE_INDEX: int = DIMENSION_NAMES.index("apparent_age")

_IDX = {name: k for k, name in enumerate(DIMENSION_NAMES)}
_CANVAS = 512
_OUT = 256

Color = tuple[int, int, int]
Points = list[tuple[float, float]]

# Palettes run from one end of the parameter to the other; values between stops interpolate.
_SKIN: tuple[Color, ...] = (
    (74, 46, 33), (118, 75, 50), (166, 114, 80), (205, 154, 116), (232, 190, 158), (248, 218, 196),
)
_EYES: tuple[Color, ...] = (
    (58, 34, 20), (112, 68, 32), (138, 112, 50), (78, 128, 70), (96, 128, 148), (52, 112, 196),
)
_LIPS: tuple[Color, ...] = ((222, 156, 150), (204, 102, 112), (178, 44, 58), (122, 36, 66))
_HAIR: tuple[Color, ...] = (
    (24, 20, 20), (62, 40, 28), (104, 70, 44), (142, 102, 62), (184, 146, 92), (222, 196, 140), (238, 226, 196),
)
_GREY: Color = (196, 196, 200)
_INK: Color = (45, 32, 30)
_HAIR_STYLES = ("bald", "buzz", "side_part", "curly", "bob", "long")
# Hair volume in canvas pixels: (at the shortest length, added at the longest).
_HAIR_VOLUME = {
    "bald": (0.0, 0.0), "buzz": (4.0, 8.0), "side_part": (10.0, 30.0),
    "curly": (14.0, 44.0), "bob": (12.0, 22.0), "long": (10.0, 22.0),
}


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _clip01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _mix(c1: Color, c2: Color, t: float) -> Color:
    return (
        round(c1[0] + (c2[0] - c1[0]) * t),
        round(c1[1] + (c2[1] - c1[1]) * t),
        round(c1[2] + (c2[2] - c1[2]) * t),
    )


def _palette(stops: tuple[Color, ...], p: float) -> Color:
    x = _clip01(p) * (len(stops) - 1)
    k = min(int(x), len(stops) - 2)
    return _mix(stops[k], stops[k + 1], x - k)


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(255 * r), round(255 * g), round(255 * b)


def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int = 24) -> Points:
    """Points on an ellipse from angle ``t0`` to ``t1`` (radians, y grows downwards)."""
    ts = np.linspace(t0, t1, n)
    return list(zip((cx + rx * np.cos(ts)).tolist(), (cy + ry * np.sin(ts)).tolist()))


def _curve(x0: float, x1: float, fy, n: int = 16) -> Points:
    """Points ``(x, fy(t))`` for ``x`` from ``x0`` to ``x1``, with ``t`` running from -1 to 1."""
    ts = np.linspace(-1.0, 1.0, n)
    xs = x0 + (x1 - x0) * (ts + 1.0) / 2.0
    return [(float(x), float(fy(t))) for x, t in zip(xs, ts)]


@dataclass(frozen=True, slots=True)
class _Face:
    """Drawing parameters in canvas pixels and RGB, derived from one latent."""

    age: float
    youth: float  # 1 for a child, 0 from about 28 years
    old: float  # 0 up to 45 years, 1 at 75
    cx: float
    cy: float
    a: float  # half width of the head
    b: float  # half height of the head
    jaw_power: float  # superellipse exponent of the lower face (2 = round, larger = square)
    jaw_taper: float  # narrowing towards the chin
    skin: Color
    hair_style: str
    hair_len: float
    hair: Color
    eye_y: float
    eye_dx: float
    eye_rx: float
    eye_ry: float
    iris: Color
    brow_thick: float
    brow_tilt: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    smile: float  # -1 frown .. 1 open smile
    lips: Color
    glasses: float  # < 0 none, else frame weight in [0, 1]
    beard: float
    ear: float
    blush: float
    background: Color
    shirt: Color


def _hair_colour(lightness: float, hue: float) -> Color:
    """Natural hair: lightness picks black .. platinum; hue warms it to auburn or cools it to ash."""
    base = _palette(_HAIR, lightness)
    _, l, sat = colorsys.rgb_to_hls(*(c / 255.0 for c in base))
    warmth = 2.0 * hue - 1.0
    if warmth >= 0.0:
        r, g, b = colorsys.hls_to_rgb(0.035, l, min(1.0, sat + 0.45 * warmth))
        return _mix(base, (round(255 * r), round(255 * g), round(255 * b)), 0.85 * warmth)
    grey = round(255 * l)
    return _mix(base, (grey, grey, grey), -0.75 * warmth)


def _face_from_latent(z: np.ndarray) -> _Face:
    p = {name: _cdf(float(z[k])) for name, k in _IDX.items()}
    age = float(apparent_age_from_coordinate(z[AGE_INDEX]))
    youth = _clip01((28.0 - age) / 20.0)
    old = _clip01((age - 45.0) / 30.0)

    a = 112.0 * (0.84 + 0.30 * p["face_width"]) * (1.0 + 0.06 * youth)
    b = 142.0 * (0.88 + 0.22 * p["face_length"]) * (1.0 - 0.10 * youth)
    cx, cy = 256.0, 232.0
    jaw = p["jaw_shape"] * (1.0 - youth)
    hair_rgb = _hair_colour(p["hair_lightness"], p["hair_hue"])
    eye_y = cy + 0.02 * b + 0.10 * b * youth
    eye_rx = 21.0 * (0.72 + 0.60 * p["eye_size"]) * (1.0 + 0.22 * youth)
    nose_y = eye_y + b * (0.22 + 0.18 * p["nose_length"]) * (1.0 - 0.30 * youth)
    chin_y = cy + b
    g = p["glasses"]
    bg_hue = 0.04 + 0.82 * p["background_hue"]  # not the full circle: both ends would be red
    return _Face(
        age=age,
        youth=youth,
        old=old,
        cx=cx,
        cy=cy,
        a=a,
        b=b,
        jaw_power=2.0 + 2.6 * jaw,
        jaw_taper=0.30 - 0.24 * jaw - 0.12 * youth,
        skin=_palette(_SKIN, p["skin_tone"]),
        hair_style=_HAIR_STYLES[min(int(p["hair_style"] * len(_HAIR_STYLES)), len(_HAIR_STYLES) - 1)],
        hair_len=p["hair_length"],
        hair=_mix(hair_rgb, _GREY, 0.9 * old),
        eye_y=eye_y,
        eye_dx=a * (0.32 + 0.16 * p["eye_spacing"]),
        eye_rx=eye_rx,
        eye_ry=eye_rx * 0.62,
        iris=_palette(_EYES, p["eye_colour"]),
        brow_thick=4.0 + 13.0 * p["brow_thickness"],
        brow_tilt=(p["brow_angle"] - 0.5) * 30.0,
        nose_y=nose_y,
        nose_w=9.0 + 26.0 * p["nose_width"],
        mouth_y=nose_y + (chin_y - nose_y) * 0.40,
        mouth_w=a * (0.20 + 0.32 * p["mouth_width"]),
        smile=2.0 * p["smile"] - 1.0,
        lips=_palette(_LIPS, p["lip_colour"]),
        glasses=(g - 0.8) / 0.2 if g > 0.8 else -1.0,
        beard=p["beard"] if age >= 16.0 else 0.0,  # no beards on children
        ear=0.70 + 0.75 * p["ear_size"],
        blush=0.6 * p["cheek_blush"],
        background=_hsv(bg_hue, 0.32, 0.93),
        shirt=_hsv(bg_hue + 0.45, 0.45, 0.55),
    )


def _outline_point(f: _Face, t: float, grow: float = 0.0) -> tuple[float, float]:
    """Head contour at angle ``t``: an ellipse above the centre line, a tapered superellipse below."""
    c, s = math.cos(t), math.sin(t)
    if s > 0.0:  # lower half (y grows downwards)
        e = 2.0 / f.jaw_power
        x = math.copysign(abs(c) ** e, c) * (1.0 - f.jaw_taper * s * s)
        y = s**e
    else:
        x, y = c, s
    return f.cx + (f.a + grow) * x, f.cy + (f.b + grow) * y


def _head_outline(f: _Face, n: int = 72) -> Points:
    return [_outline_point(f, t) for t in np.linspace(0.0, 2.0 * math.pi, n, endpoint=False).tolist()]


def _draw_body(d: ImageDraw.ImageDraw, f: _Face) -> None:
    w = 215.0 * (1.0 - 0.22 * f.youth)
    d.ellipse((f.cx - w, f.cy + f.b + 55, f.cx + w, f.cy + f.b + 360), fill=f.shirt)


def _draw_neck(d: ImageDraw.ImageDraw, f: _Face) -> None:
    w = f.a * 0.42
    neck = _mix(f.skin, _INK, 0.12)
    d.rectangle((f.cx - w, f.cy + f.b * 0.3, f.cx + w, f.cy + f.b + 80), fill=neck)
    d.ellipse((f.cx - w, f.cy + f.b - 40, f.cx + w, f.cy + f.b + 22), fill=_mix(f.skin, _INK, 0.25))
    d.ellipse((f.cx - w, f.cy + f.b + 50, f.cx + w, f.cy + f.b + 110), fill=neck)


def _draw_ears(d: ImageDraw.ImageDraw, f: _Face) -> None:
    rx, ry = 16.0 * f.ear, 30.0 * f.ear
    y = f.eye_y + 0.12 * f.b
    for side in (-1.0, 1.0):
        x = f.cx + side * (f.a * 0.96)
        d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=f.skin, outline=_mix(f.skin, _INK, 0.35), width=3)
        d.ellipse((x - rx * 0.45, y - ry * 0.55, x + rx * 0.45, y + ry * 0.55), fill=_mix(f.skin, _INK, 0.18))


def _hair_volume(f: _Face) -> float:
    """How far the hair stands off the head, in canvas pixels."""
    base, per_length = _HAIR_VOLUME[f.hair_style]
    return base + per_length * f.hair_len


def _hairline(f: _Face, line_y: float, side: float, *, shift: float = 0.0, rx: float = 0.97,
              drop: float = 0.10, n: int = 24, right_to_left: bool = True) -> Points:
    """Forehead hairline: an elliptic arc from temple to temple whose top is at ``line_y``."""
    ccy = f.cy + drop * f.b
    t0, t1 = (2.0 * math.pi + side, math.pi - side) if right_to_left else (math.pi - side, 2.0 * math.pi + side)
    return _arc(f.cx + shift * f.a, ccy, rx * f.a, ccy - line_y, t0, t1, n)


def _draw_back_hair(d: ImageDraw.ImageDraw, f: _Face) -> None:
    """Hair behind the head and neck: a bald fringe, or the back of a bob or of long hair."""
    v = _hair_volume(f)
    if f.hair_style == "bald":  # a fringe around the back of the head, showing beside the face
        th = 4.0 + 14.0 * f.hair_len
        for t0, t1 in ((0.86 * math.pi, 1.13 * math.pi), (1.87 * math.pi, 2.14 * math.pi)):
            outer = _arc(f.cx, f.cy, f.a + th, f.b + th * 0.5, t0, t1, 12)
            inner = _arc(f.cx, f.cy, f.a * 0.8, f.b * 0.8, t1, t0, 12)
            d.polygon(outer + inner, fill=f.hair)
    elif f.hair_style == "bob":
        bottom = f.cy + f.b * (0.35 + 0.55 * f.hair_len)
        d.rounded_rectangle((f.cx - f.a - v, f.cy - f.b - v, f.cx + f.a + v, bottom), radius=f.a * 0.9, fill=f.hair)
    elif f.hair_style == "long":
        bottom = f.cy + f.b * (1.05 + 1.05 * f.hair_len)
        top = _arc(f.cx, f.cy, f.a + v, f.b + v, math.pi, 2.0 * math.pi)
        flare = f.a + v + 28.0 * f.hair_len
        d.polygon(top + [(f.cx + flare, bottom), (f.cx - flare, bottom)], fill=f.hair)


def _draw_front_hair(d: ImageDraw.ImageDraw, f: _Face) -> None:
    """Hair drawn over the head: a crescent between the outer hair line and the hairline."""
    v = _hair_volume(f)
    dark = _mix(f.hair, (0, 0, 0), 0.35)
    if f.hair_style == "bald":
        d.ellipse((f.cx - f.a * 0.45, f.cy - f.b * 0.93, f.cx - f.a * 0.05, f.cy - f.b * 0.78),
                  fill=_mix(f.skin, (255, 255, 255), 0.35))
        return
    side = {"buzz": 0.10, "side_part": 0.10, "curly": 0.0}.get(f.hair_style, -0.08)
    outer = _arc(f.cx, f.cy, f.a + v, f.b + v, math.pi - side, 2.0 * math.pi + side, 32)
    if f.hair_style == "buzz":
        inner = _hairline(f, f.cy - f.b * 0.62, side)
        d.polygon(outer + inner, fill=_mix(f.hair, f.skin, 0.3))
        return
    if f.hair_style == "side_part":
        inner = _hairline(f, f.cy - f.b * 0.50, side, shift=0.30, rx=1.25, drop=0.05)
        inner = [(min(max(x, f.cx - f.a * 0.98), f.cx + f.a * 0.98), y) for x, y in inner]
        d.polygon(outer + inner, fill=f.hair)
        px = f.cx - 0.45 * f.a
        top_y = f.cy - (f.b + v) * math.sqrt(1.0 - (0.45 * f.a / (f.a + v)) ** 2) + 6.0
        d.line([(px, top_y), (px + 8, f.cy - f.b * 0.72)], fill=dark, width=4)
        return
    if f.hair_style == "curly":
        line_y = f.cy - f.b * 0.52
        d.polygon(outer + _hairline(f, line_y, side), fill=f.hair)
        r = 10.0 + 0.35 * v
        ring = _arc(f.cx, f.cy, f.a + v - r * 0.4, f.b + v - r * 0.4, math.pi - side, 2.0 * math.pi + side, 15)
        lower = _hairline(f, line_y, side, n=11, right_to_left=False)
        for x, y in ring + lower[1:-1]:
            d.ellipse((x - r, y - r, x + r, y + r), fill=f.hair)
            d.arc((x - r * 0.6, y - r * 0.6, x + r * 0.6, y + r * 0.6), 200, 340, fill=dark, width=3)
        return
    # bob: straight bangs; long: centre parting with the hair framing the forehead.
    if f.hair_style == "bob":
        bang_y = f.cy - f.b * 0.30
        inner = [(f.cx + f.a * 0.93, f.cy + 0.08 * f.b), (f.cx + f.a * 0.82, bang_y),
                 (f.cx - f.a * 0.82, bang_y), (f.cx - f.a * 0.93, f.cy + 0.08 * f.b)]
        d.polygon(outer + inner, fill=f.hair)
        return
    inner = _hairline(f, f.cy - f.b * 0.45, side, rx=0.86, drop=0.15, n=31)
    inner = [(x, y - 0.3 * f.b * math.exp(-(((x - f.cx) / (0.25 * f.a)) ** 2))) for x, y in inner]
    d.polygon(outer + inner, fill=f.hair)


def _draw_face(d: ImageDraw.ImageDraw, f: _Face) -> None:
    d.polygon(_head_outline(f), fill=f.skin, outline=_mix(f.skin, _INK, 0.35), width=3)
    if f.blush > 0.0:
        pink = (236, 104, 120)
        for side in (-1.0, 1.0):
            x, y = f.cx + side * f.a * 0.56, (f.eye_y + f.nose_y) / 2.0 + 8.0
            for k, (rx, ry) in enumerate(((30.0, 18.0), (21.0, 12.0))):
                c = _mix(f.skin, pink, f.blush * (0.55 + 0.45 * k))
                d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=c)


def _draw_wrinkles(d: ImageDraw.ImageDraw, f: _Face) -> None:
    if f.old <= 0.0:
        return
    line = _mix(f.skin, _INK, 0.15 + 0.3 * f.old)
    w = 2 + round(2 * f.old)
    for k in range(1 + round(2 * f.old)):  # forehead
        y = f.cy - f.b * (0.36 + 0.09 * k)
        d.arc((f.cx - f.a * 0.45, y, f.cx + f.a * 0.45, y + 22), 200, 340, fill=line, width=w)
    for side in (-1.0, 1.0):
        ex = f.cx + side * (f.eye_dx + f.eye_rx + 6)
        for dy in (-9.0, 0.0, 9.0):  # crow's feet
            d.line([(ex, f.eye_y + dy * 0.4), (ex + side * 16, f.eye_y + dy)], fill=line, width=w)
        nx = f.cx + side * (f.nose_w + 4)
        mx = f.cx + side * (f.mouth_w + 8)
        d.line([(nx, f.nose_y - 6), (nx + side * 10, f.nose_y + 14), (mx, f.mouth_y + 6)], fill=line, width=w,
               joint="curve")
        bx = f.cx + side * f.eye_dx
        d.arc((bx - f.eye_rx * 0.8, f.eye_y, bx + f.eye_rx * 0.8, f.eye_y + f.eye_ry * 2.6), 30, 150, fill=line,
              width=w)


def _draw_eyes(d: ImageDraw.ImageDraw, f: _Face) -> None:
    brow = _mix(f.hair, _INK, 0.45)
    for side in (-1.0, 1.0):
        x, y, rx, ry = f.cx + side * f.eye_dx, f.eye_y, f.eye_rx, f.eye_ry
        d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(250, 248, 244), outline=_INK, width=3)
        ri = ry * 0.95
        d.ellipse((x - ri, y - ri, x + ri, y + ri), fill=f.iris)
        rp = ri * 0.45
        d.ellipse((x - rp, y - rp, x + rp, y + rp), fill=(16, 12, 12))
        rh = ri * 0.28
        d.ellipse((x + ri * 0.25, y - ri * 0.55, x + ri * 0.25 + 2 * rh, y - ri * 0.55 + 2 * rh),
                  fill=(255, 255, 255))
        d.arc((x - rx, y - ry, x + rx, y + ry), 190, 350, fill=_INK, width=6)
        # Brow: thick at the inner end, tapering outwards; tilt lowers (stern) or raises the inner end.
        by = y - ry - 18.0 - 4.0 * f.youth
        inner_x, outer_x = f.cx + side * (f.eye_dx - rx * 1.05), f.cx + side * (f.eye_dx + rx * 1.15)
        iy = by + f.brow_tilt
        oy = by - f.brow_tilt * 0.3
        top = _curve(inner_x, outer_x, lambda t, iy=iy, oy=oy: iy + (oy - iy) * (t + 1) / 2 - 7.0 * (1 - t * t))
        bottom = [(x2, y2 + f.brow_thick * (1.0 - 0.55 * k / (len(top) - 1))) for k, (x2, y2) in enumerate(top)]
        d.polygon(top + bottom[::-1], fill=brow)


def _draw_glasses(d: ImageDraw.ImageDraw, f: _Face) -> None:
    if f.glasses < 0.0:
        return
    frame = _mix((28, 26, 30), (150, 40, 40), f.glasses * 0.5)
    w = round(4 + 5 * f.glasses)
    hw, hh = f.eye_rx + 13.0, f.eye_ry + 14.0
    for side in (-1.0, 1.0):
        x = f.cx + side * f.eye_dx
        box = (x - hw, f.eye_y - hh, x + hw, f.eye_y + hh)
        d.rounded_rectangle(box, radius=min(hw, hh) * (0.35 + 0.65 * f.glasses), outline=frame, width=w)
        d.line([(x + side * hw, f.eye_y - hh * 0.4), (f.cx + side * f.a * 0.97, f.eye_y - hh * 0.2)], fill=frame,
               width=w)
    d.line([(f.cx - f.eye_dx + hw, f.eye_y - 4), (f.cx + f.eye_dx - hw, f.eye_y - 4)], fill=frame, width=w)


def _draw_nose(d: ImageDraw.ImageDraw, f: _Face) -> None:
    shade = _mix(f.skin, _INK, 0.35)
    w, y = f.nose_w, f.nose_y
    d.line([(f.cx + 6, f.eye_y + 8), (f.cx + w * 0.55, y - 10)], fill=shade, width=3)
    d.ellipse((f.cx - w * 0.7, y - 14, f.cx + w * 0.7, y + 6), fill=_mix(f.skin, _INK, 0.1))
    d.arc((f.cx - w, y - 16, f.cx + w, y + 8), 20, 160, fill=shade, width=4)
    for side in (-1.0, 1.0):
        nx = f.cx + side * w * 0.45
        d.ellipse((nx - 4.5, y - 5, nx + 4.5, y + 1), fill=_mix(f.skin, _INK, 0.55))


def _draw_beard(d: ImageDraw.ImageDraw, f: _Face) -> None:
    """Stubble (a tint) or a full beard over the jaw, leaving the cheeks free."""
    if f.beard <= 0.55:
        return
    t_side = 0.16 * math.pi
    full = f.beard > 0.78
    vol = 6.0 + 150.0 * (f.beard - 0.78) if full else 0.0
    outer: Points = []
    for t in np.linspace(t_side, math.pi - t_side, 40).tolist():
        x, y = _outline_point(f, t, 2.0)
        outer.append((x, y + vol * math.sin(t) ** 4))
    mw = f.mouth_w + 14.0
    ys = outer[0][1]
    inner = [
        (f.cx - f.a * 0.80, ys), (f.cx - mw, f.mouth_y - 6.0), (f.cx - mw * 0.6, f.nose_y + 7.0),
        (f.cx + mw * 0.6, f.nose_y + 7.0), (f.cx + mw, f.mouth_y - 6.0), (f.cx + f.a * 0.80, ys),
    ]
    if full:
        colour = _mix(f.hair, _INK, 0.2)  # a shade darker than the hair, so a beard reads apart from it
    else:
        colour = _mix(f.skin, _mix(f.hair, _INK, 0.4), 0.12 + 0.8 * (f.beard - 0.55))
    d.polygon(outer + inner, fill=colour)


def _draw_mouth(d: ImageDraw.ImageDraw, f: _Face) -> None:
    w, y0, s = f.mouth_w, f.mouth_y, f.smile

    def mid(t: float) -> float:  # mouth line: corners rise with a smile, fall with a frown
        return y0 + 15.0 * s * (1 - t * t) - 7.5 * s

    gap = max(0.0, (s - 0.35) / 0.65) * 30.0
    upper = _curve(f.cx - w, f.cx + w, lambda t: mid(t) - 9.0 * (1 - t * t) ** 0.5 - 1.5)
    lower = _curve(f.cx + w, f.cx - w, lambda t: mid(t) + gap * (1 - t * t) + 11.0 * (1 - t * t) ** 0.6 + 1.5)
    d.polygon(upper + lower, fill=f.lips)
    line = _mix(f.lips, _INK, 0.6)
    if gap > 0.0:
        opening = _curve(f.cx - w * 0.92, f.cx + w * 0.92, mid)
        opening += _curve(f.cx + w * 0.92, f.cx - w * 0.92, lambda t: mid(t) + gap * (1 - t * t))
        d.polygon(opening, fill=(92, 28, 36))
        teeth = _curve(f.cx - w * 0.8, f.cx + w * 0.8, lambda t: mid(t) + 0.5)
        teeth += _curve(f.cx + w * 0.8, f.cx - w * 0.8, lambda t: mid(t) + min(gap * (1 - t * t), 9.0))
        d.polygon(teeth, fill=(246, 244, 236))
    d.line(_curve(f.cx - w, f.cx + w, mid), fill=line, width=4, joint="curve")


def _render(f: _Face) -> Image.Image:
    img = Image.new("RGB", (_CANVAS, _CANVAS), f.background)
    d = ImageDraw.Draw(img)
    _draw_body(d, f)
    _draw_back_hair(d, f)
    _draw_neck(d, f)
    if f.hair_style not in ("bob", "long"):
        _draw_ears(d, f)
    _draw_face(d, f)
    _draw_wrinkles(d, f)
    _draw_nose(d, f)
    _draw_beard(d, f)
    _draw_mouth(d, f)
    _draw_eyes(d, f)
    _draw_front_hair(d, f)
    _draw_glasses(d, f)
    return img.reduce(_CANVAS // _OUT)


class ProceduralFaceSpace:
    """Cartoon faces over a 24-dimensional latent of named features (see ``DIMENSION_NAMES``).

    ``sample`` draws from the prior truncated to the box by rejection (exact), not by clipping.
    ``render`` clamps its input into the box first, so a latent and its projection look the same.
    """

    name: str = "procedural"
    dim: int = len(DIMENSION_NAMES)
    dimension_names: tuple[str, ...] = DIMENSION_NAMES
    age_index: int = AGE_INDEX

    def __repr__(self) -> str:
        return f"ProceduralFaceSpace(dim={self.dim})"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` latents of shape ``(n, dim)`` from the truncated prior (safety not applied)."""
        return sample_truncated_prior(n, self.dim, rng)

    def render(self, z: np.ndarray) -> Image.Image:
        """Draw the face of one latent of shape ``(dim,)`` as a 256x256 RGB image."""
        return _render(_face_from_latent(check_single(z, self.dim)))

    def apparent_age_years(self, z: np.ndarray) -> np.ndarray:
        """Apparent age in years, ``39 + 13 * z[..., AGE_INDEX]``, shape ``z.shape[:-1]``."""
        return apparent_age_from_coordinate(check_batch(z, self.dim)[..., self.age_index])

    def in_safety_region(self, z: np.ndarray) -> np.ndarray:
        """True where the apparent age is under 18 or a coordinate is non-finite, shape ``z.shape[:-1]``."""
        return underage_or_invalid(check_batch(z, self.dim), self.age_index)

    def project(self, z: np.ndarray) -> np.ndarray:
        """Clamp ``z`` of shape ``(..., dim)`` into the box; non-finite values become 0."""
        return project_into_box(z, self.dim)
