"""One job per output folder: an advisory lock file that names the job holding it.

Two jobs writing one folder race on the same partial files and one of them dies halfway
(or, worse, both finish with each other's shards). A running job holds an exclusive
`fcntl.flock` on `<folder>/.vqtok.lock`; a second job fails at once with a message naming
the first. The kernel drops the lock when its process dies, so a lock left by a killed job
never blocks `--resume`: the file stays, the lock does not. Ranks of one distributed job
share the folder and each takes its own lock file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from vqtok.pipelines.errors import UsageError


def lock_path(folder: Path, rank: int = 0) -> Path:
    """The lock file of `rank` in `folder`.

    Args:
        folder: A job's output folder.
        rank: The process's rank in its job.

    Returns:
        `.vqtok.lock` for rank 0, `.vqtok-rank<N>.lock` for the others.
    """
    return folder / (".vqtok.lock" if rank == 0 else f".vqtok-rank{rank}.lock")


class FolderLock:
    """Exclusive use of `folder` by this process while the `with` block runs.

    Args:
        folder: The job's output folder (made if missing).
        job: The job's name, shown to a second job that finds the folder taken.
        rank: This process's rank when several ranks of one job share the folder.
    """

    def __init__(self, folder: str | Path, job: str, rank: int = 0) -> None:
        self.folder = Path(folder)
        self.job = job
        self.path = lock_path(self.folder, rank)
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or fail naming the job that holds it.

        Raises:
            UsageError: Another live process holds the folder.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"{self.folder} is in use by another job ({_holder(path)}); wait for it to "
                "finish or stop it, or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_whoami(self.job)).encode() + b"\n")
        self._fd = fd

    def __del__(self) -> None:
        # A job whose set-up fails after taking the lock may never reach its release.
        self.release()

    def release(self) -> None:
        """Drop the lock (the file stays: removing it could let two jobs in at once)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _whoami(job: str) -> dict[str, object]:
    return {
        "job": job,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _holder(path: Path) -> str:
    """What the lock file says about its holder, in words."""
    try:
        info = json.loads(path.read_text())
        return (
            f"`vqtok {info['job']}`, pid {info['pid']} on {info['host']}, "
            f"started {info['started']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a vqtok job that has not yet written its name"
