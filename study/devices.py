"""GPU placement, by construction: which GPU a process uses, memory growth, and the device's name.

- Each training process claims a job slot once, before TensorFlow allocates anything: the lowest slot
  whose lock file (`<temporary folder>/study-gpu-slot-<i>.lock`, held for the process's lifetime)
  no other process of this machine holds. Slot i uses GPU i mod #GPUs, so the parallel jobs of a sweep
  (joblib's workers: `make sweep JOBS=<#GPUs>`) each get their own GPU instead of all using GPU 0.
- A launcher that already chose the GPUs (Ray's `num_gpus`, SLURM's `--gres`: CUDA_VISIBLE_DEVICES is
  set) is respected: no slot is claimed, the process uses what it was given.
- Memory growth is enabled on every visible GPU, so that two processes on one GPU (or TensorFlow
  beside another program) do not each reserve all of its memory.
- `describe()` is the `device` tag: `GPU x1 (NVIDIA A100-SXM4-40GB)`, or `CPU (2 cores)`.

Verified on CPU only (this project's machines have no GPU): the slot and GPU arithmetic and the locks
are tested with 0, 1 and 4 GPUs listed; scripts/gpu_check.py is the self-test to run on a GPU machine.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

LOCKS = "study-gpu-slot-{}.lock"
MAX_SLOTS = 64
_claimed: tuple[int, object] | None = None  # this process's slot and its open lock file (kept open)


def gpu_for_slot(slot: int, n_gpus: int) -> int | None:
    """The GPU (index among the visible ones) job slot `slot` uses: slot mod #GPUs; None without GPUs."""
    return None if n_gpus <= 0 else slot % n_gpus


def claim_slot(folder: str | Path | None = None, max_slots: int = MAX_SLOTS):
    """(slot, open lock file): the lowest slot no other open lock holds (an exclusive, non-blocking
    flock, released when the file is closed or the process ends). Raises when all are held."""
    folder = Path(folder or tempfile.gettempdir())
    for slot in range(max_slots):
        f = open(folder / LOCKS.format(slot), "a+")  # noqa: SIM115 (kept open: it is the lock)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return slot, f
    raise RuntimeError(f"all {max_slots} GPU job slots under {folder} are held by other processes")


def place(folder: str | Path | None = None) -> int | None:
    """Once per process, before TensorFlow allocates: the GPU this process uses (index among the
    physical GPUs; None on a CPU machine or when the launcher chose), memory growth on every visible
    GPU. Idempotent; a second call returns the first call's answer."""
    global _claimed
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    chosen = None
    if "CUDA_VISIBLE_DEVICES" not in os.environ and len(gpus) > 1:
        if _claimed is None:
            _claimed = claim_slot(folder)
        chosen = gpu_for_slot(_claimed[0], len(gpus))
        try:
            tf.config.set_visible_devices(gpus[chosen], "GPU")
        except RuntimeError:  # TensorFlow already initialised its devices in this process: keep them
            chosen = None
    for gpu in tf.config.get_visible_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised: growth is fixed for this process
            pass
    return chosen


def describe(gpus: list | None = None, cpus: int | None = None) -> str:
    """The `device` tag: the GPUs this process sees, with their model, else the CPU's cores."""
    if gpus is None:
        import tensorflow as tf

        gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return f"CPU ({cpus or os.cpu_count()} cores)"
    names = []
    for gpu in gpus:
        try:
            import tensorflow as tf

            names.append(tf.config.experimental.get_device_details(gpu).get("device_name") or "unknown model")
        except Exception:
            names.append("unknown model")
    return f"GPU x{len(gpus)} ({', '.join(sorted(set(names)))})"
