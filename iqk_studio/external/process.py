"""A tool run as a subprocess in its own process group: its merged stdout+stderr streamed as text
pieces as they arrive, and a stop that sends SIGTERM to the whole group, then SIGKILL."""

from __future__ import annotations

import codecs
import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator

# lines that say why a tool failed (shown first in a failure message)
_TELLING = (re.compile(r"GGML_ASSERT|error|failed|what\(\)|Segmentation fault|out of memory",
                       re.I),
            re.compile(r"abort|cannot|unable|invalid|not found|No such file", re.I))


class ToolProcess:
    """Popen with stdin closed, stdout and stderr merged into one pipe read by a thread."""

    def __init__(self, argv: list[str], cwd=None, env=None):
        kw: dict = {}
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kw["start_new_session"] = True  # its own session and process group
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=cwd, env=env, **kw)
        self._q: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._pump, name=f"read-{self.proc.pid}",
                                        daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        fd = self.proc.stdout.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                self._q.put(data)
        except OSError:
            pass
        finally:
            self._q.put(None)

    def pieces(self, idle: float = 0.25) -> Iterator[str]:
        """Decoded output as it arrives; "" after `idle` seconds without output; ends at EOF."""
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                data = self._q.get(timeout=idle)
            except queue.Empty:
                yield ""
                continue
            if data is None:
                rest = dec.decode(b"", final=True)
                if rest:
                    yield rest
                return
            text = dec.decode(data)
            if text:
                yield text

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(1.0)
        self.proc.stdout.close()
        return rc

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM to the process group, SIGKILL to it after `grace` seconds; the exit status.
        The group is signalled only while its leader is alive (so its id cannot be reused)."""
        if self.running():
            self._signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
            try:
                return self.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self._signal(signal.SIGKILL if os.name != "nt" else None)
        return self.wait()

    def _signal(self, sig) -> None:
        try:
            if os.name == "nt":
                if sig is None:
                    self.proc.kill()
                else:
                    self.proc.send_signal(sig)
            else:
                os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def failure_message(tool: str, rc: int | None, tail: Iterable[str], n: int = 12) -> str:
    """`llama-perplexity failed (exit status 1): <the telling line>` and the last output lines."""
    lines = [ln.rstrip() for ln in tail if ln.strip()]
    telling = next((ln for rx in _TELLING for ln in reversed(lines) if rx.search(ln)), None)
    why = describe_exit(rc) if rc is not None else "stopped"
    head = f"{tool} failed ({why})" + (f": {telling.strip()}" if telling else "")
    last = lines[-n:]
    if not last:
        return head + " without output"
    return head + "\nlast output:\n" + "\n".join("  " + ln for ln in last)
