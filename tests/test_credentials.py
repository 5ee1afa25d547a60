"""No credential in any line or file on an error path the harness did not foresee."""

from helpers.commands import run_main
from helpers.servers import free_port

from study import data

SECRET = "s3cret-Pw"


def _everything_written(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes().decode("utf-8", "replace")


def test_an_uncaught_error_prints_and_writes_no_password(tmp_path, monkeypatch):
    """Re-raised, Hydra printed `Error executing job with overrides: [...]` with the URI as typed. (In
    a sweep the sweep callback reaches the store first; tests/test_soak.py searches a sweep's output
    on a server with a password.)"""
    uri = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"

    def broken_load(*args, **kwargs):  # an error the harness does not catch, naming the store as
        raise RuntimeError(f"connection to {uri}/api/2.0 reset")  # database drivers' errors do

    monkeypatch.setattr(data, "load", broken_load)
    args = ["data=synthetic", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"]
    proc = run_main(args, tmp_path)
    said = proc.stdout + proc.stderr
    assert "connection to http://***@127.0.0.1" in said, said[-2000:]  # the error is shown, redacted
    assert SECRET not in said and "Error executing job with overrides" not in said
    assert proc.returncode == 1, said[-2000:]
    files = dict(_everything_written(tmp_path))
    assert any(p.name == "overrides.yaml" for p in files)  # Hydra wrote its files
    assert not [str(p) for p, text in files.items() if SECRET in text]
