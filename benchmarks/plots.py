"""Draw the benchmark plots as PNG files with Pillow (the project does not depend on matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 960, 540
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 30, 60, 80
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _nice_max(value: float) -> float:
    """Round up to 1, 2 or 5 times a power of ten, for an axis that ends on a round number."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _canvas(title: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN_LEFT, 18), title, fill="black", font=_font(18))
    return image, draw


def _y_axis(draw: ImageDraw.ImageDraw, top: float, label: str, *, log_scale: bool = False, bottom: float = 1.0) -> None:
    font = _font(12)
    x0, y0, y1 = MARGIN_LEFT, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP
    draw.line([(x0, y0), (x0, y1)], fill="black")
    draw.line([(x0, y0), (WIDTH - MARGIN_RIGHT, y0)], fill="black")
    if log_scale:
        ticks = [10**k for k in range(int(math.log10(bottom)), int(math.log10(top)) + 1)]
    else:
        ticks = [top * i / 5 for i in range(6)]
    for tick in ticks:
        y = _y_position(tick, top, log_scale=log_scale, bottom=bottom)
        draw.line([(x0 - 4, y), (WIDTH - MARGIN_RIGHT, y)], fill="#dddddd")
        draw.text((8, y - 7), f"{tick:,.0f}", fill="black", font=font)
    draw.text((8, MARGIN_TOP - 24), label, fill="black", font=font)


def _y_position(value: float, top: float, *, log_scale: bool = False, bottom: float = 1.0) -> float:
    y0, y1 = HEIGHT - MARGIN_BOTTOM, MARGIN_TOP
    if log_scale:
        value = max(value, bottom)
        fraction = (math.log10(value) - math.log10(bottom)) / (math.log10(top) - math.log10(bottom))
    else:
        fraction = value / top
    return y0 - fraction * (y0 - y1)


def _legend(draw: ImageDraw.ImageDraw, index: int, name: str, colour: str, width: int) -> None:
    """Draw one legend entry in the top right corner of the plot area, on a white box."""
    x, y = WIDTH - MARGIN_RIGHT - width, MARGIN_TOP + 6 + index * 20
    draw.rectangle([x - 6, y - 3, x + width - 10, y + 17], fill="white")
    draw.rectangle([x, y + 2, x + 12, y + 14], fill=colour)
    draw.text((x + 18, y), name, fill="black", font=_font(13))


def stage_throughput(path: Path, stages: list[str], series: dict[str, list[float]], title: str) -> None:
    """Draw grouped bars of invoices per second per stage on a log scale, one colour per series."""
    image, draw = _canvas(title)
    values = [v for vs in series.values() for v in vs if v > 0]
    top = 10 ** math.ceil(math.log10(max(values))) if values else 10
    _y_axis(draw, top, "invoices or messages per second (log scale)", log_scale=True, bottom=1)
    font = _font(13)
    slot = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / max(1, len(stages))
    bar = slot * 0.8 / max(1, len(series))
    for s_index, (name, numbers) in enumerate(series.items()):
        colour = COLOURS[s_index % len(COLOURS)]
        for index, value in enumerate(numbers):
            x = MARGIN_LEFT + index * slot + slot * 0.1 + s_index * bar
            y = _y_position(value, top, log_scale=True)
            draw.rectangle([x, y, x + bar - 2, HEIGHT - MARGIN_BOTTOM], fill=colour)
            draw.text((x, y - 16), f"{value:,.0f}", fill="black", font=_font(11))
        _legend(draw, s_index, name, colour, 220)
    for index, stage in enumerate(stages):
        draw.text((MARGIN_LEFT + index * slot + slot * 0.3, HEIGHT - MARGIN_BOTTOM + 10), stage, fill="black",
                  font=font)
    image.save(path)


def latency_cdf(path: Path, samples: dict[str, list[float]], title: str) -> None:
    """Draw the cumulative distribution of latencies (seconds, ascending lists), one line per series."""
    image, draw = _canvas(title)
    longest = max((s[-1] for s in samples.values() if s), default=1.0)
    right = _nice_max(longest)
    _y_axis(draw, 100, "% of invoices accepted within x")
    font = _font(12)
    x0, x1 = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    for i in range(6):
        value = right * i / 5
        x = x0 + (x1 - x0) * i / 5
        draw.line([(x, HEIGHT - MARGIN_BOTTOM), (x, HEIGHT - MARGIN_BOTTOM + 4)], fill="black")
        draw.text((x - 10, HEIGHT - MARGIN_BOTTOM + 8), f"{value:,.0f}", fill="black", font=font)
    draw.text(((x0 + x1) / 2 - 120, HEIGHT - 30), "seconds from ready_at to accepted by the gateway",
              fill="black", font=font)
    for s_index, (name, values) in enumerate(samples.items()):
        colour = COLOURS[s_index % len(COLOURS)]
        if values:
            step = max(1, len(values) // 800)
            points = [(x0 + (x1 - x0) * values[i] / right, _y_position(100 * (i + 1) / len(values), 100))
                      for i in range(0, len(values), step)]
            points.append((x0 + (x1 - x0) * values[-1] / right, _y_position(100, 100)))
            draw.line(points, fill=colour, width=3)
        _legend(draw, s_index, name, colour, 260)
    image.save(path)
