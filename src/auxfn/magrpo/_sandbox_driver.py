"""Runs inside the sandbox process (never imported by auxfn): program, then tests, one verdict each.

Protocol: the payload (JSON: code, tests, per-test timeout, nonce, drop_to) arrives on stdin;
verdicts are written as ``<nonce><json>`` lines to the inherited file descriptor ``channel_fd``. When started as (namespace) root it
first hides the shared temporary folders behind private tmpfs mounts, then drops to an
unprivileged uid, so the program can neither write outside its working folder nor signal
processes of other users.
"""

import ctypes
import json
import os
import signal
import sys

_PRELOAD = (
    "math", "cmath", "re", "string", "itertools", "functools", "collections", "heapq", "bisect",
    "operator", "copy", "typing", "random", "statistics", "fractions", "decimal", "json", "hashlib",
    "dataclasses", "enum", "datetime", "textwrap", "unicodedata", "array", "numbers",
)


def _private_tmp() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for where in (b"/tmp", b"/var/tmp", b"/dev/shm"):
        if os.path.isdir(where):
            libc.mount(b"tmpfs", where, b"tmpfs", 0, b"size=8m,mode=1777")


def _main() -> None:
    payload = json.loads(sys.stdin.read())
    sys.stdin.close()
    channel = os.fdopen(payload.pop("channel_fd"), "w", buffering=1)
    nonce = payload.pop("nonce")
    if os.getuid() == 0:
        _private_tmp()
        drop = payload.get("drop_to")
        if drop is not None:
            # The interpreter's own files may not be readable by the unprivileged uid (e.g. a
            # Python under /root), so the standard modules generated code commonly uses are
            # loaded before the drop; anything else it imports must be readable by that uid.
            import importlib

            for name in _PRELOAD:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass
            os.setgroups([])
            os.setgid(drop)
            os.setuid(drop)

    def report(obj):
        channel.write(nonce + json.dumps(obj) + "\n")

    def on_alarm(*_):
        raise TimeoutError("timed out")

    signal.signal(signal.SIGALRM, on_alarm)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    per_test = float(payload["per_test_timeout"])
    try:
        signal.setitimer(signal.ITIMER_REAL, per_test)
        exec(compile(payload["code"], "<program>", "exec"), namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as err:  # noqa: BLE001 - every outcome is data
        signal.setitimer(signal.ITIMER_REAL, 0)
        report({"stage": "program", "error": f"{type(err).__name__}: {err}"[:300]})
        return
    report({"stage": "program", "error": None})
    for i, test in enumerate(payload["tests"]):
        try:
            signal.setitimer(signal.ITIMER_REAL, per_test)
            exec(compile(test, f"<test {i}>", "exec"), namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
            report({"test": i, "ok": True})
        except BaseException as err:  # noqa: BLE001
            signal.setitimer(signal.ITIMER_REAL, 0)
            report({"test": i, "ok": False, "error": f"{type(err).__name__}: {err}"[:300]})


if __name__ == "__main__":
    _main()
