"""ttsd/fsutil.py: atomic writes that survive a kill, reads that refuse what is not a regular file,
and locks that die with their holder. The crash and lock tests run a real second process."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ttsd
from tests.support.fakes import umask
from ttsd.fsutil import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    LockHeld,
    NotRegularFile,
    atomic_write,
    hold_lock,
    is_locked,
    link_new,
    read_regular_file,
    stage_file,
    sweep_temp_files,
    write_new_file,
)

# The child processes import the very copy of ttsd under test, whatever is installed.
PROJECT_ROOT = Path(ttsd.__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 30.0


def child_env() -> dict[str, str]:
    """The environment for a child `python -c`, with this checkout first on its path."""
    paths = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- atomic_write and stage_file ------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o777])
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640])
def test_atomic_write_replaces_content_and_mode_whatever_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    target = tmp_path / "status.json"
    target.write_bytes(b"the old document, longer than the new one")
    target.chmod(0o666)
    with umask(mask):
        atomic_write(target, b"new", mode=mode)
    assert target.read_bytes() == b"new"
    assert mode_of(target) == mode
    assert temp_files(tmp_path) == []


def test_atomic_write_creates_a_missing_file_without_fsync_too(tmp_path: Path) -> None:
    target = tmp_path / "fresh.wav"
    atomic_write(target, b"\x00\x01", durable=False)
    assert target.read_bytes() == b"\x00\x01"
    assert mode_of(target) == 0o644


def test_a_kill_between_write_and_rename_leaves_the_old_file_and_a_temp_file_to_sweep(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    target.write_bytes(b"old and complete")
    new = b"n" * 10_000
    # The child is killed by its own SIGKILL halfway through the write, the way a power cut or
    # launchd's kill -9 would stop the daemon: no handler, no cleanup.
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from ttsd.fsutil import stage_file\n"
        "stage_file(Path(sys.argv[1]), b'n' * int(sys.argv[2]), midway=lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
        "sys.exit('stage_file returned after the kill')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(len(new))],
        env=child_env(),
        capture_output=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")

    assert target.read_bytes() == b"old and complete"
    (leftover,) = temp_files(tmp_path)
    assert leftover.read_bytes() == new[: len(new) // 2]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([target.name, leftover.name])

    assert sweep_temp_files(tmp_path) == [leftover]
    assert sorted(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == b"old and complete"


def test_a_failure_while_staging_removes_the_temp_file(tmp_path: Path) -> None:
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stage_file(tmp_path, b"data", midway=fail)
    assert list(tmp_path.iterdir()) == []


def test_a_symlink_planted_at_the_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    target = outbox / "job.status.json"
    target.symlink_to(victim)

    atomic_write(target, b"the status")

    assert not target.is_symlink()
    assert target.read_bytes() == b"the status"
    assert victim.read_bytes() == b"precious"


def test_sweep_removes_only_temp_files_and_only_below_when_asked(tmp_path: Path) -> None:
    nested = tmp_path / "chunks" / "job-1"
    nested.mkdir(parents=True)
    top_temp = stage_file(tmp_path, b"a")
    nested_temp = stage_file(nested, b"b")
    keep = [tmp_path / "job.wav", tmp_path / "notes.tmp", tmp_path / ".ttsd-lookalike.txt"]
    for path in keep:
        path.write_bytes(b"keep")
    planted = tmp_path / f"{TEMP_PREFIX}planted{TEMP_SUFFIX}"
    planted.symlink_to(tmp_path / "job.wav")

    assert sweep_temp_files(tmp_path) == [top_temp]
    assert nested_temp.exists()
    assert sweep_temp_files(tmp_path, recursive=True) == [nested_temp]
    assert all(path.read_bytes() == b"keep" for path in keep)
    assert planted.is_symlink(), "a symlink is not ttsd's temp file: left alone"


# -- link_new and write_new_file ------------------------------------------------------------------


def test_link_new_never_replaces_an_existing_file_and_takes_the_next_name(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_bytes(b"waiting")
    (tmp_path / "job-2.json").symlink_to(tmp_path / "elsewhere")  # even a dangling link is taken

    published = link_new(b"new", tmp_path, iter(["job.json", "job-2.json", "job-3.json", "job-4.json"]))

    assert published == tmp_path / "job-3.json"
    assert published.read_bytes() == b"new"
    assert (tmp_path / "job.json").read_bytes() == b"waiting"
    assert not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "job-4.json").exists()
    assert temp_files(tmp_path) == []


def test_link_new_fails_when_every_name_is_taken_and_leaves_nothing_behind(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"taken")
    with pytest.raises(FileExistsError):
        link_new(b"new", tmp_path, ["a", "b"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "b"]
    assert all((tmp_path / name).read_bytes() == b"taken" for name in ("a", "b"))


def test_write_new_file_unlinks_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "chunk.wav"
    path.symlink_to(victim)

    write_new_file(path, b"fresh")

    assert not path.is_symlink()
    assert path.read_bytes() == b"fresh"
    assert victim.read_bytes() == b"precious"


def test_write_new_file_replaces_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "chunk.wav"
    path.write_bytes(b"a stale and longer file")
    write_new_file(path, b"new")
    assert path.read_bytes() == b"new"


# -- read_regular_file ----------------------------------------------------------------------------


def test_read_regular_file_caps_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 10_000)
    assert read_regular_file(path, 100) == b"x" * 100
    assert read_regular_file(path, 20_000) == b"x" * 10_000


def test_read_regular_file_refuses_a_symlink_and_a_folder(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_bytes(b"{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(OSError):
        read_regular_file(link, 100)
    with pytest.raises(OSError):
        read_regular_file(tmp_path, 100)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "absent", 100)


@pytest.mark.parametrize("kind", ["symlink", "folder"])
def test_read_regular_file_says_not_regular_for_a_symlink_or_a_folder(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "planted.json"
    if kind == "symlink":
        (tmp_path / "real.json").write_bytes(b"{}")
        path.symlink_to(tmp_path / "real.json")
    else:
        path.mkdir()
    with pytest.raises(NotRegularFile):
        read_regular_file(path, 100)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_read_regular_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "planted.json"
    os.mkfifo(fifo)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(read_regular_file(fifo, 100))
        except BaseException as exc:
            outcome.append(exc)

    # A blocking open of a FIFO waits for a writer forever: run it where the test can give up.
    reader = threading.Thread(target=read, name="fifo-reader", daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():
        # Open the write end to release the stuck reader, then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("read_regular_file blocked on a FIFO")
    (result,) = outcome
    assert isinstance(result, NotRegularFile), result


# -- hold_lock and is_locked ----------------------------------------------------------------------

HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from ttsd.fsutil import hold_lock\n"
    "with hold_lock(Path(sys.argv[1]), sys.argv[2]):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.read()\n"  # holds the lock until killed (or its stdin closes)
)


def await_line(process: subprocess.Popen[str], expected: str, timeout: float) -> None:
    """Wait, at most `timeout` seconds, for the child to print `expected` on a line of its own."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"the child did not say {expected!r} within {timeout:g}s"
    line = process.stdout.readline()
    assert line.strip() == expected, f"the child said {line!r} (exit status {process.poll()})"


def test_a_lock_is_held_across_processes_and_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    lock = tmp_path / "daemon.lock"
    assert not is_locked(lock), "no lock file: nobody holds it"

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), "pid 4242 on this host"],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        await_line(holder, "locked", CHILD_TIMEOUT_S)
        assert is_locked(lock)
        with pytest.raises(LockHeld) as refused, hold_lock(lock, "second daemon"):
            pytest.fail("a second holder got the lock")
        assert refused.value.holder == "pid 4242 on this host"
        assert "pid 4242 on this host" in str(refused.value)
        assert is_locked(lock), "asking must not release the holder's lock"

        holder.kill()
        assert holder.wait(timeout=CHILD_TIMEOUT_S) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=CHILD_TIMEOUT_S)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()

    # The kernel dropped the lock with the process: no stale-lock cleanup is needed.
    assert not is_locked(lock)
    with hold_lock(lock, "the new daemon"):
        assert is_locked(lock)
        assert lock.read_text(encoding="utf-8") == "the new daemon"
    assert not is_locked(lock)
