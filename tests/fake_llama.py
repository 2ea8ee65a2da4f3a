"""A stand-in for llama-perplexity / llama-quantize / llama-imatrix (the tool is the name it is
started as, FAKE_TOOL): replays a real log with delays, the `[i]x,` values on stdout without newlines and
the rest on stderr, as the real tools do. Environment:

FAKE_LOG        the log to replay (required for a run)
FAKE_LOG_KLD    the log to replay instead when --kl-divergence is given
FAKE_DELAY      seconds between output pieces (default 0.001)
FAKE_NAN_AT     print `-nan` for chunks from this index on
FAKE_EXIT       exit status after the replay (default 0); `abort` kills itself with SIGABRT
FAKE_STALL_AT   stop before this chunk (or tensor) and sleep until killed
FAKE_IGNORE_TERM=1  ignore SIGTERM
FAKE_ARGV       write the argv received (JSON) to this file
FAKE_PIDFILE    write the pid to this file
FAKE_FLAVOUR    ik (default) or mainline: what --help shows
FAKE_OUTPUT_SRC a file copied to the output (-o, --kl-divergence-base, llama-quantize OUT)
"""

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

TOOL = os.environ.get("FAKE_TOOL") or Path(sys.argv[0]).name  # set by the wrappers
ENV = os.environ
DELAY = float(ENV.get("FAKE_DELAY", "0.001"))


def out(stream, text: str) -> None:
    stream.write(text)
    stream.flush()
    if DELAY:
        time.sleep(DELAY)


def stall() -> None:
    while True:
        time.sleep(0.05)


def write_output(path: str | None) -> None:
    if not path:
        return
    src = ENV.get("FAKE_OUTPUT_SRC")
    if src:
        shutil.copyfile(src, path)
    else:
        Path(path).write_bytes(b"fake output\n")


def output_path(argv: list[str]) -> str | None:
    for opt in ("-o", "--output", "--kl-divergence-base"):
        if opt in argv and "--kl-divergence" not in argv:
            return argv[argv.index(opt) + 1]
    if TOOL.startswith("llama-quantize") and "--dry-run" not in argv:
        tail = argv[:-1] if argv and argv[-1].isdigit() else argv  # MODEL OUT TYPE [N]
        return tail[-2] if len(tail) >= 3 else None
    return None


def replay(log: str, argv: list[str]) -> None:
    nan_at = int(ENV.get("FAKE_NAN_AT", "0") or 0)
    stall_at = int(ENV.get("FAKE_STALL_AT", "0") or 0)
    out_path = output_path(argv)
    partial = open(out_path, "wb") if out_path and TOOL.startswith("llama-quantize") else None
    for line in log.splitlines(keepends=True):
        if re.match(r"\[\d+\]", line):  # the value stream: one value at a time, no newline
            for m in re.finditer(r"\[(\d+)\]([^,]*),", line):
                i = int(m.group(1))
                if stall_at and i >= stall_at:
                    stall()
                val = "-nan" if nan_at and i >= nan_at else m.group(2)
                out(sys.stdout, f"[{i}]{val},")
            out(sys.stdout, "\n")
            continue
        head = re.match(r"\[\s*(\d+)/\s*\d+\]", line)
        if head and stall_at and int(head.group(1)) >= stall_at:
            stall()
        if partial is not None and head:
            partial.write(b"x" * 1024)  # a half-written output while it runs
            partial.flush()
        if "saving all logits" in line or "stored collected data" in line:
            write_output(out_path)
        to_stdout = line.startswith(("Final estimate", "chunk ", "====", "Mean", "Maximum",
                                     "Minimum", "Median", "RMS", "Same top", "Cor(")) or \
            re.match(r"\s*\d+(\.\d+)?%?\s", line)
        out(sys.stdout if to_stdout else sys.stderr, line)
    if partial is not None:
        partial.close()
    if out_path and not Path(out_path).exists() or out_path and ENV.get("FAKE_OUTPUT_SRC"):
        write_output(out_path)


def main() -> int:
    argv = sys.argv[1:]
    if ENV.get("FAKE_ARGV"):
        Path(ENV["FAKE_ARGV"]).write_text(json.dumps(argv))
    if ENV.get("FAKE_PIDFILE"):
        Path(ENV["FAKE_PIDFILE"]).write_text(str(os.getpid()))
    if ENV.get("FAKE_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if argv[:1] == ["--version"]:
        print("version: 4840 (8337e4cd3)\nbuilt with cc (fake) for x86_64-linux-gnu",
              file=sys.stderr)
        return 0
    if argv[:1] == ["--help"]:
        ik = ENV.get("FAKE_FLAVOUR", "ik") == "ik"
        opts = ["-m,    --model FNAME", "-c,    --ctx-size N"]
        if TOOL.startswith("llama-quantize"):
            opts = ["--allow-requantize", "--custom-q" if ik else "--tensor-type"]
        elif ik:
            opts += ["-mla,  --mla-use", "-rtr,   --run-time-repack"]
        print("usage: " + TOOL + "\n" + "\n".join("  " + o for o in opts))
        return 0 if not TOOL.startswith("llama-quantize") else 1
    log = ENV["FAKE_LOG_KLD"] if "--kl-divergence" in argv and "FAKE_LOG_KLD" in ENV else \
        ENV["FAKE_LOG"]
    replay(Path(log).read_text(encoding="utf-8"), argv)
    code = ENV.get("FAKE_EXIT", "0")
    if code == "abort":
        os.kill(os.getpid(), signal.SIGABRT)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
