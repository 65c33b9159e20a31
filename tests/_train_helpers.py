"""Helpers shared by the ``tests/test_train_*.py`` files (not a test module).

- :func:`worker`: runs ``tests/_train_worker.py`` in a subprocess (optionally with N fake
  CPU devices, which must be set before JAX is imported, hence the subprocess);
- :func:`launch`: runs P worker processes of one ``jax.distributed`` run on 127.0.0.1;
- :func:`last_json`, :func:`load_npz`: read what the worker printed and saved;
- :func:`tensorboard_scalars`: reads tensorboardX event files back.

The tiny models and tasks themselves live in ``tests/_train_worker.py``; the session-wide
``train_reference_run`` fixture is in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "_train_worker.py")


def worker_env(devices: int | None = None) -> dict[str, str]:
    """The environment for a worker subprocess: CPU only, ``devices`` fake host devices."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    # The test run's compilation cache (tests/conftest.py): a rerun or resume of a worker loads
    # the programs its first run compiled instead of compiling them again.
    cache = os.environ.get("SEQJAX_TEST_JAX_CACHE")
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
        env["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(2**31)
    return env


def worker(*args: str, devices: int | None = None, timeout: float = 300):
    """Runs ``python tests/_train_worker.py *args``; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, WORKER, *args],
        env=worker_env(devices),
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    mode: str,
    workdir: str,
    *args: str,
    processes: int,
    devices: int = 1,
    timeout: float = 240,
    heartbeat: int = 10,
) -> list[tuple[int, str, str, float]]:
    """Runs ``processes`` worker processes of one distributed run on 127.0.0.1.

    Each gets ``devices`` fake CPU devices and the same arguments but its own
    ``--process-id``. All are killed if any is still running after ``timeout`` seconds.

    Returns:
      Per process ``(returncode, stdout, stderr, seconds until it exited)``.
    """
    coordinator = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    procs = []
    for i in range(processes):
        cmd = [sys.executable, WORKER, mode, workdir, *args]
        cmd += ["--coordinator", coordinator, "--num-processes", str(processes)]
        cmd += ["--process-id", str(i), "--heartbeat-timeout", str(heartbeat)]
        procs.append(
            subprocess.Popen(
                cmd,
                env=worker_env(devices),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out: list = [None] * processes

    def wait(i: int, p: subprocess.Popen) -> None:
        try:
            so, se = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            so, se = p.communicate()
            se += f"\n[killed by the test after {timeout} s]"
        out[i] = (p.returncode, so, se, time.monotonic() - t0)

    threads = [threading.Thread(target=wait, args=(i, p)) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def last_json(stdout: str) -> dict:
    """The last line of ``stdout`` that is a JSON object."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def load_npz(path: str) -> dict[str, np.ndarray]:
    """An ``.npz`` file as a dict of arrays."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def tensorboard_scalars(directory: str) -> dict[tuple[int, str], float]:
    """Reads scalar summaries from tensorboardX event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out[(event.step, v.tag)] = v.simple_value
    return out
