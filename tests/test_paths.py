"""Path arguments of the tracking store, its artifact folder and the spill of unsent metrics: a
folder where a file is meant, a file where a folder is meant, missing, unreadable, unwritable,
relative, on a full disk. Each ends in one TrackingError line naming the path, before MLflow is
asked where possible, and leaves nothing half-written behind (issue 32, item 5)."""

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from helpers.commands import TINY, run_main

from study import tracking

HEADER = tracking.SQLITE_HEADER + b"\0" * 84  # enough of a SQLite file for the checks, which read its header


def tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


@contextlib.contextmanager
def immutable(path: Path):
    """`chattr +i`: as root, the one way to make a file or folder refuse writes (chmod does not)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root on a file system that supports it)")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def as_other_user():
    """Run the block as user `nobody` (root's chmod bits are not enforced); as another user, as is."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "64k"):
    """A tmpfs of `size` mounted on `folder`; skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip() or proc.returncode}")
    try:
        yield folder
    finally:  # lazily: an MLflow engine of a store there may still hold a file open until collected
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; the filler file is returned."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def one_error(uri: str, **kw) -> str:
    with pytest.raises(tracking.TrackingError) as err:
        tracking.check_sqlite(uri, **kw)
    text = str(err.value)
    assert "\n" not in text
    return text


# --- the SQLite store


@pytest.mark.parametrize("must_exist", [False, True])  # True: make_report.py and replay_unsent.py
def test_store_paths_of_the_wrong_kind_are_one_line_each_and_nothing_is_created(tmp_path, must_exist):
    (tmp_path / "a.db").mkdir()
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    before = tree(tmp_path)
    cases = {
        tmp_path / "a.db": "is a folder, not a SQLite file",
        Path("/dev/null"): "is not a regular file",
    }
    if not must_exist:  # a missing store is `no tracking store at` for the report (tested in test_faults)
        cases |= {afile / "m.db": f"{afile} is a file, not a folder", afile / "x" / "m.db": f"{afile} is a file"}
    for path, said in cases.items():
        text = one_error(f"sqlite:///{path}", must_exist=must_exist)
        assert said in text and str(path) in text, text
    text = one_error("sqlite:///runs/mlflow.db", must_exist=must_exist)
    assert "is a relative path" in text and f"sqlite:///{Path.cwd()}/runs/mlflow.db" in text
    assert tree(tmp_path) == before and afile.read_text() == "mine\n"


def test_a_store_that_cannot_be_read_or_written_is_named_before_mlflow_opens_it(tmp_path):
    frozen = tmp_path / "frozen.db"
    frozen.write_bytes(HEADER)
    with immutable(frozen):
        text = one_error(f"sqlite:///{frozen}")
        assert f"tracking store {frozen} is not writable (Operation not permitted" in text
        assert f"tracking store {frozen} is not writable" in one_error(f"sqlite:///{frozen}", must_exist=True)
    shared = Path(tempfile.mkdtemp(prefix="study-paths-"))  # pytest's tmp_path is 0700: another user cannot enter
    try:
        shared.chmod(0o755)
        (shared / "locked.db").write_bytes(HEADER)
        (shared / "locked.db").chmod(0o000)
        (shared / "readonly.db").write_bytes(HEADER)
        (shared / "readonly.db").chmod(0o444)
        with as_other_user():
            locked, readonly = one_error(f"sqlite:///{shared}/locked.db"), one_error(f"sqlite:///{shared}/readonly.db")
        assert f"tracking store {shared}/locked.db cannot be read (Permission denied)" in locked
        assert f"tracking store {shared}/readonly.db is not writable (Permission denied" in readonly
        assert (shared / "readonly.db").read_bytes() == HEADER
    finally:
        shutil.rmtree(shared)


def test_a_store_in_a_folder_that_cannot_be_written_is_refused_for_the_report_too(tmp_path):
    folder = tmp_path / "frozen"
    folder.mkdir()
    (folder / "mlflow.db").write_bytes(HEADER)
    with immutable(folder):
        for must_exist in (False, True):
            assert f"folder {folder} is not writable" in one_error(
                f"sqlite:///{folder}/mlflow.db", must_exist=must_exist
            )
        assert f"folder {folder} is not writable" in one_error(f"sqlite:///{folder}/new/mlflow.db")
    assert tree(folder) == [("mlflow.db", len(HEADER))]


def test_missing_folders_of_a_new_store_are_made_and_said(tmp_path, monkeypatch, capsys):
    """A new store's folders are made (as before; the launch command may name a new folder), and
    the line that says the store is new now says which folder was made for it."""

    class Client:  # MLflow's first use of a new store, without its migration's seconds of CPU
        def __init__(self, tracking_uri):
            tracking.sqlite_path(tracking_uri).write_bytes(HEADER)

        def search_experiments(self, max_results):
            return []

    monkeypatch.setattr(tracking.store, "MlflowClient", Client)
    path = tmp_path / "new" / "deeper" / "mlflow.db"
    tracking.check_store(f"sqlite:///{path}", None)
    assert not (tmp_path / "new").exists()  # the check makes nothing
    tracking.client(f"sqlite:///{path}")
    assert path.exists()
    assert f"new tracking store created at {path} (folder {tmp_path / 'new'} made for it)" in capsys.readouterr().err


# --- the artifact folder


def test_artifact_folders_of_the_wrong_kind_are_refused_before_the_experiment_records_them(tmp_path, store):
    uri, c = store
    afile, frozen = tmp_path / "afile", tmp_path / "frozen"
    afile.write_text("mine\n")
    frozen.mkdir()
    cases = {
        afile: f"artifact folder {afile} is not writable: {afile} is a file, not a folder",
        afile / "arts": f"artifact folder {afile / 'arts'} is not writable: {afile} is a file, not a folder",
        frozen
        / "arts": f"artifact folder {frozen / 'arts'}: folder {frozen} is not writable (Operation not permitted)",
        frozen: f"artifact folder {frozen} is not writable (Operation not permitted)",
    }
    with immutable(frozen):
        for i, (folder, said) in enumerate(cases.items()):
            with pytest.raises(tracking.TrackingError) as err:
                tracking.ensure_experiment(c, f"e{i}", tracking.artifact_location(uri, str(folder)))
            assert said in str(err.value) and "tracking.artifact_location" in str(err.value), str(err.value)
            # before: the experiment was created first, its bad folder fixed for good (rerunning with a
            # good tracking.artifact_location failed the same way, advising the same useless fix)
            assert c.get_experiment_by_name(f"e{i}") is None
    assert afile.read_text() == "mine\n" and list(frozen.iterdir()) == []


def test_an_existing_experiment_keeps_its_artifact_folder_and_says_so(tmp_path, store, capsys):
    uri, c = store
    kept, asked = tmp_path / "kept", tmp_path / "asked"
    exp_id = tracking.ensure_experiment(c, "exp", kept.as_uri())
    assert tracking.ensure_experiment(c, "exp", asked.as_uri()) == exp_id
    assert f"keeps its artifacts in {kept.as_uri()}" in capsys.readouterr().err
    kept.mkdir()
    with immutable(kept), pytest.raises(tracking.TrackingError) as err:
        tracking.ensure_experiment(c, "exp", asked.as_uri())
    assert f"artifact folder {kept} is not writable" in str(err.value)
    assert "keeps the artifact folder it was created with" in str(err.value)


# --- full disks


def test_a_new_store_on_a_full_disk_is_one_line_and_leaves_nothing_behind(tmp_path):
    with tiny_disk(tmp_path / "disk") as disk:
        path = disk / "sub" / "mlflow.db"
        with pytest.raises(tracking.TrackingError) as err:
            tracking.check_store(f"sqlite:///{path}", None)
        assert f"tracking store {path}: no space left on device for {disk}" in str(err.value)
        assert "a new MLflow store needs" in str(err.value)
        # the disk fills only once MLflow writes (another process, or a check skipped): MLflow's
        # migration stops half-way; that partial file read as a corrupt store ("duplicate column
        # name: step") in every later run. Now it is removed, with the folder made for it.
        for _ in range(2):
            with pytest.raises(tracking.TrackingError) as err:
                tracking.client(f"sqlite:///{path}")
            assert f"no space left on device for tracking store {path}" in str(err.value)
            assert "nothing left behind" in str(err.value) and tree(disk) == []


def test_an_existing_store_on_a_full_disk_is_refused_untouched_then_works(tmp_path, empty_store):
    with tiny_disk(tmp_path / "disk", "1200k") as disk:
        shutil.copyfile(empty_store, disk / "mlflow.db")
        filler, before = fill(disk), (disk / "mlflow.db").read_bytes()
        uri = f"sqlite:///{disk}/mlflow.db"
        for must_exist in (False, True):
            text = one_error(uri, must_exist=must_exist)
            assert f"tracking store {disk}/mlflow.db: no space left on device for {disk}" in text
        assert (disk / "mlflow.db").read_bytes() == before
        filler.unlink()
        tracking.check_store(uri, None)
        assert tracking.client(uri).search_experiments() is not None


def test_a_store_that_fills_during_a_run_keeps_the_metrics_and_says_so(tmp_path, empty_store, monkeypatch, capfd):
    monkeypatch.setattr(tracking.RunLogger, "RETRIES", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the spill's second choice
    with tiny_disk(tmp_path / "disk", "1400k") as disk:
        shutil.copyfile(empty_store, disk / "mlflow.db")
        uri = f"sqlite:///{disk}/mlflow.db"
        c = tracking.client(uri)
        run_id = c.create_run(tracking.ensure_experiment(c, "e", None)).info.run_id
        run = tracking.RunLogger(c, run_id, spill_dir=disk, background=True)
        fill(disk)
        for step in range(3):
            run.metrics({f"grad/l{i}/rms": 0.5 for i in range(500)}, step)
        with pytest.raises(tracking.TrackingError) as err:
            run.flush()
        run.stop()
    text, spill = str(err.value), tmp_path / f"unsent_metrics_{run.run_id}.jsonl"
    assert f"no space left on device for tracking store {disk}/mlflow.db" in text and "\n" not in text
    assert f"1500 metrics kept in {spill}" in text and f"not in {disk}/unsent_metrics_" in text
    assert len(spill.read_text().splitlines()) == 1500
    assert "Traceback" not in capfd.readouterr().err  # MLflow's own logged traceback of the full disk


def test_an_artifact_on_a_full_disk_is_one_line_and_no_partial_file(tmp_path, store):
    uri, c = store
    with tiny_disk(tmp_path / "disk") as disk:
        exp = tracking.ensure_experiment(c, "arts", (disk / "arts").as_uri())
        run = tracking.RunLogger(c, c.create_run(exp).info.run_id)
        with pytest.raises(tracking.TrackingError) as err:
            run.text("x" * 200_000, "tables/big.txt")
        root = disk / "arts" / run.run_id / "artifacts"
        assert f"no space left on device for artifact folder {root}" in str(err.value)
        assert "artifact tables/big.txt of run" in str(err.value)
        assert not (root / "tables" / "big.txt").exists()
        filler = fill(disk)
        with pytest.raises(tracking.TrackingError) as err:
            tracking.check_artifacts((disk / "arts").as_uri())
        assert f"artifact folder {disk / 'arts'}: no space left on device for {disk / 'arts'}" in str(err.value)
        filler.unlink()


# --- the spill of unsent metrics


class LostStore:
    """A client whose store is gone: every write fails."""

    tracking_uri = "http://127.0.0.1:9"

    def log_batch(self, *args, **kwargs):
        raise ConnectionError("store gone")


def lose(run: tracking.RunLogger, n: int, step: int = 0) -> str:
    """Log `n` metrics and flush them to a lost store, in a thread: before, a spill that failed in
    the worker thread ended that thread without marking its batch done, and flush() waited for
    ever. The TrackingError's text (raised by metrics() itself when it sends a full batch inline)."""
    out = {}

    def go():
        try:
            run.metrics({f"m{i}": i for i in range(n)}, step)
            run.flush()
        except tracking.TrackingError as err:
            out["err"] = str(err)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "flush() hangs"
    run.stop()  # its worker thread ends, as a run's does at its end (tests count the live ones)
    assert "\n" not in out["err"]
    return out["err"]


@pytest.mark.parametrize("background", [False, True])
def test_a_spill_folder_that_is_a_file_or_unwritable_falls_back_then_counts_what_is_lost(
    tmp_path, monkeypatch, background
):
    monkeypatch.setattr(tracking.RunLogger, "RETRIES", 1)
    afile, spare, frozen = tmp_path / "afile", tmp_path / "spare", tmp_path / "frozen"
    afile.write_text("mine\n")
    spare.mkdir()
    frozen.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    text = lose(tracking.RunLogger(LostStore(), "r1", spill_dir=afile, background=background), 1200)
    assert "tracking store unreachable while logging run r1" in text
    assert (
        f"1200 metrics kept in {spare}/unsent_metrics_r1.jsonl" in text and f"not in {afile}/unsent_metrics_r1" in text
    )
    assert len((spare / "unsent_metrics_r1.jsonl").read_text().splitlines()) == 1200
    with immutable(frozen):
        monkeypatch.setattr(tempfile, "tempdir", str(afile))  # the second choice is unusable too
        text = lose(tracking.RunLogger(LostStore(), "r2", spill_dir=frozen, background=background), 1200)
    assert (
        "1200 metrics LOST: none of" in text and f"{frozen}/unsent_metrics_r2.jsonl (Operation not permitted)" in text
    )
    assert f"{afile}/unsent_metrics_r2.jsonl (Not a directory)" in text and afile.read_text() == "mine\n"


def test_a_spill_on_a_full_disk_leaves_whole_lines_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking.RunLogger, "RETRIES", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with tiny_disk(tmp_path / "disk") as disk:
        spill = disk / "unsent_metrics_r3.jsonl"
        spill.write_text('{"key": "m", "value": 1.0, "timestamp": 1, "step": 0}\n')
        before = spill.read_text()
        fill(disk)
        text = lose(tracking.RunLogger(LostStore(), "r3", spill_dir=disk, background=True), 2000, step=1)
        assert spill.read_text() == before  # cut back: no partial line for the replay to choke on
    assert f"2000 metrics kept in {tmp_path}/unsent_metrics_r3.jsonl" in text
    assert f"not in {spill} (No space left on device)" in text


# --- end to end: what the user sees


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]


def test_a_run_on_a_store_inside_a_file_is_one_error_line_and_exit_2(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    proc = run_main([*TINY, f"tracking.uri=sqlite:///{afile}/m.db"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "start:" not in proc.stdout
    assert error_lines(proc) == [
        f"error: tracking store {afile}/m.db is not writable: {afile} is a file, not a folder; "
        "set tracking.uri to a store in a writable folder"
    ]


def test_a_sweep_on_a_full_disk_is_one_error_line_and_exit_2(tmp_path):
    with tiny_disk(tmp_path / "disk") as disk:
        proc = run_main(["-m", "experiment=smoke", f"tracking.uri=sqlite:///{disk}/runs/mlflow.db"], tmp_path)
        assert tree(disk) == []
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "start:" not in proc.stdout
    (line,) = error_lines(proc)
    assert f"tracking store {disk}/runs/mlflow.db: no space left on device for {disk}" in line
