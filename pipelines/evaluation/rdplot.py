"""A small rate-distortion plot drawn with Pillow (no plotting library needed).

One polyline with markers per curve, linear axes with rounded ticks, a legend; curves are
CompressAI-style dicts (`name`, `results[rate_key]`, `results[quality_key]`).
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = (900, 600)
MARGIN = {"left": 80, "right": 220, "top": 40, "bottom": 60}
COLORS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
]


def plot_curves(curves: list[dict], rate_key: str, quality_key: str, path: Path) -> Path:
    """Draw `quality_key` against `rate_key` for every curve and save a PNG at `path`."""
    series = [(c["name"], _points(c, rate_key, quality_key)) for c in curves]
    series = [(name, points) for name, points in series if points]
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    xs = [x for _, points in series for x, _ in points] or [0.0, 1.0]
    ys = [y for _, points in series for _, y in points] or [0.0, 1.0]
    x_ticks, y_ticks = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    to_pixel = _mapping(x_ticks, y_ticks)
    _draw_axes(draw, font, x_ticks, y_ticks, to_pixel, rate_key, quality_key)
    for index, (name, points) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        pixels = [to_pixel(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for px, py in pixels:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color)
        legend_y = MARGIN["top"] + 18 * index
        legend_x = SIZE[0] - MARGIN["right"] + 15
        draw.line((legend_x, legend_y + 6, legend_x + 20, legend_y + 6), fill=color, width=3)
        draw.text((legend_x + 26, legend_y), name[:30], fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _points(curve: dict, rate_key: str, quality_key: str) -> list[tuple[float, float]]:
    rates, qualities = curve["results"].get(rate_key, []), curve["results"].get(quality_key, [])
    return [
        (x, y) for x, y in zip(rates, qualities, strict=False) if x is not None and y is not None
    ]


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        low, high = low - 1, high + 1
    raw = (high - low) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _mapping(x_ticks: list[float], y_ticks: list[float]):
    width = SIZE[0] - MARGIN["left"] - MARGIN["right"]
    height = SIZE[1] - MARGIN["top"] - MARGIN["bottom"]

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = MARGIN["left"] + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * width
        py = MARGIN["top"] + (1 - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])) * height
        return px, py

    return to_pixel


def _draw_axes(
    draw: ImageDraw.ImageDraw, font, x_ticks, y_ticks, to_pixel, x_label: str, y_label: str
) -> None:
    left, bottom = to_pixel(x_ticks[0], y_ticks[0])
    right, top = to_pixel(x_ticks[-1], y_ticks[-1])
    for x in x_ticks:
        px, _ = to_pixel(x, y_ticks[0])
        draw.line((px, top, px, bottom), fill="#e6e6e6")
        draw.text((px - 12, bottom + 6), f"{x:g}", fill="black", font=font)
    for y in y_ticks:
        _, py = to_pixel(x_ticks[0], y)
        draw.line((left, py, right, py), fill="#e6e6e6")
        draw.text((left - 50, py - 6), f"{y:g}", fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    draw.text(((left + right) / 2 - 20, bottom + 28), x_label, fill="black", font=font)
    draw.text((8, top - 24), y_label, fill="black", font=font)
