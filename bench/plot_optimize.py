"""Chart of bench/validate_optimize.py's JSON files: size (bpw) vs held-out perplexity, the
optimizer's front against llama-quantize's built-in mixes, one panel per model.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/plot_optimize.py A.json B.json \\
        -o docs/optimize-validation.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from pyqtgraph.exporters import ImageExporter
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841 - pyqtgraph needs one
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    win = pg.GraphicsLayoutWidget()
    win.resize(560 * len(args.json), 440)
    for path in args.json:
        d = json.load(open(path))
        p = win.addPlot(title=f"{d['name']}: held-out PPL ({d['eval_chunks']} chunks of "
                        f"{d['n_ctx']}) vs size")
        p.setLabel("bottom", "bits per weight")
        p.setLabel("left", "perplexity")
        p.showGrid(x=True, y=True, alpha=0.3)
        p.addLegend(offset=(-10, 10))
        mixes = sorted(d["mixes"], key=lambda r: r["bpw"])
        opt = sorted(d["optimizer"], key=lambda r: r["bpw"])
        p.plot([r["bpw"] for r in mixes], [r["ppl"] for r in mixes], pen=pg.mkPen("#c0392b", width=2),
               symbol="s", symbolBrush="#c0392b", name="llama-quantize mixes")
        p.plot([r["bpw"] for r in opt], [r["ppl"] for r in opt], pen=pg.mkPen("#2471a3", width=2),
               symbol="o", symbolBrush="#2471a3", name="optimizer (same budget)")
        for r in mixes:
            t = pg.TextItem(r["label"], color="#c0392b", anchor=(0, 1))
            t.setPos(r["bpw"], r["ppl"])
            p.addItem(t)
        src = d["source"]["ppl"]
        p.addLine(y=src, pen=pg.mkPen("#7f8c8d", style=pg.QtCore.Qt.PenStyle.DashLine))
        t = pg.TextItem(f"source {src:.3f}", color="#7f8c8d", anchor=(1, 1))
        t.setPos(max(r["bpw"] for r in mixes + opt), src)
        p.addItem(t)
    app.processEvents()
    ImageExporter(win.scene()).export(args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
