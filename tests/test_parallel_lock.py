"""Two jobs at once (the app runs a quantize beside an evaluation): with numba's workqueue layer,
parallel kernels launched from two threads abort the process unless every launch takes
_parallel.KERNEL_LOCK."""

import os
import subprocess
import sys

from iqk_studio._parallel import is_parallel

_SCRIPT = r"""
import threading
import numpy as np
from iqk_studio.engine.scoring import nll_rows
from iqk_studio.quant import api

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 512)).astype(np.float32)
logits = rng.standard_normal((64, 1000)).astype(np.float32)
targets = rng.integers(0, 1000, 64)
errors = []

def quantize():
    try:
        for _ in range(40):
            api.dequantize(api.quantize(x, "q4_K"), "q4_K", 512)
    except BaseException as e:
        errors.append(e)

def score():
    try:
        for _ in range(200):
            nll_rows(logits, targets)
    except BaseException as e:
        errors.append(e)

threads = [threading.Thread(target=f) for f in (quantize, quantize, score)]
for t in threads:
    t.start()
for t in threads:
    t.join()
import numba
print(numba.threading_layer(), len(errors))
"""


def test_two_jobs_with_numba_workqueue_layer():
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["workqueue", "0"]


def test_only_known_serial_kernels_skip_the_lock():
    from numba import njit

    @njit(parallel=True)
    def par(x):
        return x

    @njit
    def ser(x):
        return x

    assert is_parallel(par) and not is_parallel(ser)
    assert is_parallel(lambda x: x)  # a plain function may launch a parallel kernel
