"""Chart of bench/validate_optimize.py's JSON files: size (bpw) vs held-out perplexity, the
optimizer's front against llama-quantize's built-in mixes, one panel per model.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/plot_optimize.py A.json B.json \\
        -o docs/optimize-validation.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys


def _panel(pg, p, d, metric, axis) -> None:
    p.setTitle(f"{d['name']}: {d['eval_chunks']} held-out chunks of {d['n_ctx']}")
    p.setLabel("bottom", "bits per weight")
    p.setLabel("left", axis)
    p.showGrid(x=True, y=True, alpha=0.3)
    log = metric == "kld"
    p.setLogMode(False, log)
    p.getAxis("left").enableAutoSIPrefix(False)
    p.getAxis("left").setWidth(80)  # room for a PPL of a million
    p.addLegend(offset=(10, -10) if log else (10, 10))
    mixes = sorted(d["mixes"], key=lambda r: r["bpw"])
    opt = sorted(d["optimizer"], key=lambda r: r["bpw"])
    floor = 1e-6  # a KLD of 0 (lossless) is drawn at 1e-6 on the log axis
    v = (lambda r: max(r[metric], floor)) if log else (lambda r: r[metric])
    y = (lambda r: math.log10(v(r))) if log else v
    p.plot([r["bpw"] for r in mixes], [v(r) for r in mixes],
           pen=pg.mkPen("#c0392b", width=2), symbol="s", symbolBrush="#c0392b",
           name="llama-quantize mixes")
    p.plot([r["bpw"] for r in opt], [v(r) for r in opt], pen=pg.mkPen("#2471a3", width=2),
           symbol="o", symbolBrush="#2471a3", name="optimizer (same budget)")
    for r in mixes:
        t = pg.TextItem(r["label"], color="#c0392b", anchor=(0, 1))
        t.setPos(r["bpw"], y(r))
        p.addItem(t)
    if metric == "ppl":
        src = d["source"]["ppl"]
        p.addLine(y=src, pen=pg.mkPen("#7f8c8d", style=pg.QtCore.Qt.PenStyle.DashLine))
        t = pg.TextItem(f"source {src:.3f}", color="#7f8c8d", anchor=(0, 0))
        t.setPos(min(r["bpw"] for r in mixes + opt), src)
        p.addItem(t)


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
    win.resize(620 * len(args.json), 900)
    data = [json.load(open(path)) for path in args.json]
    for row, (metric, axis) in enumerate((("ppl", "perplexity (held-out)"),
                                          ("kld", "KLD vs the source (held-out; 0 drawn at 1e-6)"))):
        for col, d in enumerate(data):
            _panel(pg, win.addPlot(row=row, col=col), d, metric, axis)
    win.show()
    app.processEvents()
    ImageExporter(win.scene()).export(args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
