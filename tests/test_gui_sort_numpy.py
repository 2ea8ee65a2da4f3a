"""Sorting the sensitivity table by a column of numpy values (the job yields np.float64) must
not crash: a numpy bool returned from QTreeWidgetItem.__lt__ segfaulted PySide6 6.11 inside
Qt's sort. Run in a subprocess so a regression fails this test instead of killing the run."""

import subprocess
import sys

SCRIPT = r"""
import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QTreeWidget
from iqk_studio.gui.sensitivity_view import NumItem, natural_key

app = QApplication([])
t = QTreeWidget()
t.setColumnCount(3)
t.setSortingEnabled(True)
rng = np.random.default_rng(0)
for i in range(40):
    label = f"blk.{i}.x"
    kld = np.float64(rng.random())
    t.addTopLevelItem(NumItem([label, f"{kld:.4f}", ""], [natural_key(label), kld,
                                                         np.float64(np.inf)]))
for col in (1, 2, 0):
    for order in (Qt.DescendingOrder, Qt.AscendingOrder):
        t.sortByColumn(col, order)
vals = [float(t.topLevelItem(i).text(1)) for i in range(40)]
t.sortByColumn(1, Qt.DescendingOrder)
got = [float(t.topLevelItem(i).text(1)) for i in range(40)]
assert got == sorted(vals, reverse=True), got
print("ok")
"""


def test_sort_by_numpy_column_does_not_crash():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=120, env={**__import__("os").environ,
                                         "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stderr[-800:])
