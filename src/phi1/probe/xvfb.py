"""A private Xvfb display for the probe checks, started and stopped by the runner.

    with xvfb() as display:          # ":7", say; Xvfb is gone after the block
        Sandbox(display=display)

Xvfb picks a free display number itself (`-displayfd`) and listens only on its unix
socket (`-nolisten tcp`), which is what the sandbox's GUI policy binds into programs.
Install it with `apt-get install -y xvfb` (`make` does when it is missing).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from typing import Iterator

from phi1.errors import Phi1Error


@contextlib.contextmanager
def xvfb(screen: str = "1024x768x24", timeout: float = 20.0) -> Iterator[str]:
    """Start Xvfb on a free display; yield its name (":N"); stop it afterwards."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise Phi1Error("Xvfb not found: install it (apt-get install -y xvfb) to run the Tkinter probes")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [exe, "-displayfd", str(w), "-nolisten", "tcp", "-screen", "0", screen, "-nolock"],
        pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C of the caller reaches it through us, not twice
    )
    os.close(w)
    try:
        number = b""
        deadline = time.monotonic() + timeout
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                break
            chunk = os.read(r, 64)
            if not chunk:
                break
            number += chunk
        if not number.strip().isdigit():
            proc.kill()
            err = proc.communicate()[1].decode(errors="replace").strip().splitlines()
            raise Phi1Error(f"Xvfb did not start: {err[-1] if err else 'no display number reported'}")
        display = f":{int(number)}"
        yield display
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
