"""Draw the app icon: a bell curve of weights snapped to the IQ4_NL value grid (16 non-uniform
levels, read from iqk_studio.quant.grids) on a rounded square. Writes resources/icons/iqk-studio.svg
and, rendered by Qt, .png (256 px), .ico (Windows) and .icns (macOS):

    QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/make_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "resources" / "icons"
S = 256  # the SVG's user units: one per pixel of the PNG


def svg() -> str:
    from iqk_studio.quant.grids import kvalues_iq4nl

    grid = kvalues_iq4nl.astype(float) / 127.0  # -1 .. 0.89, non-uniform
    x0, x1, base, top = 28.0, 228.0, 206.0, 52.0

    def px(v):  # grid value -> x
        return x0 + (v + 1.0) / 2.0 * (x1 - x0)

    def bell(v):  # the weights' density, peak 1
        return np.exp(-0.5 * (v / 0.38) ** 2)

    ticks = "".join(
        f'<line x1="{px(v):.1f}" y1="{base + 8:.1f}" x2="{px(v):.1f}" y2="{base + 20:.1f}"/>'
        for v in grid)
    # one bar per grid level: as wide as the values that round to it, as high as their density
    edges = np.concatenate([[-1.0], (grid[1:] + grid[:-1]) / 2, [1.0]])
    bars = []
    for i, v in enumerate(grid):
        a, b = px(edges[i]) + 1.2, px(edges[i + 1]) - 1.2
        h = (base - top) * bell(v)
        bars.append(f'<rect x="{a:.1f}" y="{base - h:.1f}" width="{b - a:.1f}" '
                    f'height="{h:.1f}" rx="2"/>')
    vs = np.linspace(-1, 1, 81)
    curve = " ".join(f"{px(v):.1f},{base - (base - top) * bell(v):.1f}" for v in vs)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{S}" height="{S}" '
        f'viewBox="0 0 {S} {S}">\n'
        '<defs><linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">'
        '<stop offset="0" stop-color="#1f3b63"/><stop offset="1" stop-color="#0e1c30"/>'
        '</linearGradient></defs>\n'
        f'<rect x="8" y="8" width="{S - 16}" height="{S - 16}" rx="44" fill="url(#bg)"/>\n'
        f'<g fill="#f2a33a">{"".join(bars)}</g>\n'
        f'<polyline points="{curve}" fill="none" stroke="#e8f1ff" stroke-width="5" '
        'stroke-linejoin="round" stroke-linecap="round"/>\n'
        f'<g stroke="#8fb3e0" stroke-width="3" stroke-linecap="round">{ticks}</g>\n'
        '</svg>\n')


def render(svg_path: Path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841
    r = QSvgRenderer(str(svg_path))
    for size, fmt, name in ((256, "PNG", "iqk-studio.png"), (128, "ICO", "iqk-studio.ico"),
                            (256, "ICNS", "iqk-studio.icns")):
        img = QImage(size, size, QImage.Format_ARGB32)
        img.fill(Qt.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.Antialiasing)
        r.render(p)
        p.end()
        if not img.save(str(OUT / name), fmt):
            raise SystemExit(f"make_icon: Qt cannot write {fmt} here")
        print(f"{OUT / name}: {(OUT / name).stat().st_size // 1024} KiB")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "iqk-studio.svg"
    path.write_text(svg())
    print(f"{path}: {path.stat().st_size // 1024} KiB")
    render(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
