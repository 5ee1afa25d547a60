"""GPU placement, tested on CPU: which GPU each job slot gets with 0, 1 and 4 GPUs, slots claimed by
locks that concurrent processes cannot share, the device tag, and make sweep's default JOBS."""

import os
import subprocess
import sys

import pytest
from helpers.commands import ROOT

from study import devices


@pytest.mark.parametrize("n_gpus, want", [(0, [None] * 6), (1, [0] * 6), (4, [0, 1, 2, 3, 0, 1])])
def test_each_job_slot_gets_its_gpu(n_gpus, want):
    assert [devices.gpu_for_slot(slot, n_gpus) for slot in range(6)] == want


def test_concurrent_processes_claim_distinct_slots_and_a_freed_slot_is_reused(tmp_path):
    held = [devices.claim_slot(tmp_path) for _ in range(4)]  # four workers at once
    assert [slot for slot, _ in held] == [0, 1, 2, 3]
    assert [devices.gpu_for_slot(slot, 4) for slot, _ in held] == [0, 1, 2, 3]  # one GPU each, none shared
    held[1][1].close()  # a worker ends: its lock is released
    again = devices.claim_slot(tmp_path)  # kept: its open file is the lock
    assert again[0] == 1
    # another process sees the slots this one holds: it gets the next free one
    code = "import sys; from study import devices; print(devices.claim_slot(sys.argv[1])[0])"
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "4"
    with pytest.raises(RuntimeError, match="all 4 GPU job slots"):
        devices.claim_slot(tmp_path, max_slots=4)  # slots 0-3 held here (the other process has ended)


def test_on_this_cpu_machine_nothing_is_placed_and_the_device_tag_names_the_cores(tmp_path):
    assert devices.place(tmp_path) is None
    assert not list(tmp_path.iterdir())  # no GPU: no slot claimed
    assert devices.describe() == f"CPU ({os.cpu_count()} cores)"
    assert devices.describe([], cpus=2) == "CPU (2 cores)"
    assert devices.describe(["not-a-device"]) == "GPU x1 (unknown model)"


@pytest.mark.parametrize("listed, n_jobs", [(None, None), (1, None), (4, 4)])
def test_make_sweep_runs_one_job_per_gpu_that_nvidia_smi_lists(tmp_path, listed, n_jobs):
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    env.pop("JOBS", None)
    if listed is not None:
        fake = tmp_path / "nvidia-smi"
        fake.write_text(
            "#!/bin/sh\n" + "".join(f'echo "GPU {i}: NVIDIA A100 (UUID: GPU-{i})"\n' for i in range(listed))
        )
        fake.chmod(0o755)
    else:
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not os.path.exists(os.path.join(p, "nvidia-smi")))
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "sweep"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    line = next(l for l in plan.stdout.splitlines() if "-m study.train" in l)
    if n_jobs is None:
        assert "hydra/launcher=joblib" not in line, line
    else:
        assert f"hydra/launcher=joblib hydra.launcher.n_jobs={n_jobs}" in line, line


def test_gpu_check_says_plainly_that_this_machine_has_no_gpu(tmp_path):
    from helpers.commands import run_script

    ran = run_script("gpu_check.py", [], tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "GPUs: 0" in ran.stdout and "no GPU found" in ran.stdout, ran.stdout
