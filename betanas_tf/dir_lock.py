"""One run per output directory: an exclusive OS lock on `<out_dir>/.lock`.

`fcntl.flock` locks belong to the open file, so the operating system releases them when
the process ends however it ends (SIGKILL, a crash, a lost machine): a directory is
never left locked by a run that is gone, and the next run resumes at once. The file
holds the holder's pid and host, so the refusal can name them.
"""

import errno
import fcntl
import os
import socket

from betanas_tf import cli

LOCK_FILE = ".lock"


class DirectoryBusy(cli.TemporaryFailure):
  """Another live process holds the output directory; the message names it and its pid."""


class DirectoryLock:
  """Holds `<directory>/.lock` exclusively from `acquire` (or `with`) until `release` or
  the end of the process. `acquire` never waits: a lock held by another process is a
  `DirectoryBusy` error; within one process the lock nests (a program that locks its
  directory and then calls a library function that locks it again)."""

  _held = {}   # real path of the lock file -> [open file, depth], this process's locks

  def __init__(self, directory: str):
    self.directory = directory
    self.path = os.path.join(directory, LOCK_FILE)
    self._handle = None

  def acquire(self) -> "DirectoryLock":
    os.makedirs(self.directory, exist_ok=True)
    key = os.path.realpath(self.path)
    if key in DirectoryLock._held:
      DirectoryLock._held[key][1] += 1
      self._handle = DirectoryLock._held[key][0]
      return self
    handle = open(self.path, "a+")   # never truncate: the holder's pid is in it
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        handle.close()
        raise
      handle.seek(0)
      holder = handle.read().strip() or "an unknown process"
      handle.close()
      raise DirectoryBusy(f"{self.directory} is in use by another run ({holder}); wait for it "
                          "to end, or give another --out_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    self._handle = handle
    DirectoryLock._held[key] = [handle, 1]
    return self

  def release(self):
    if self._handle is None:
      return
    key = os.path.realpath(self.path)
    held = DirectoryLock._held.get(key)
    if held is not None:
      held[1] -= 1
      if held[1] == 0:
        del DirectoryLock._held[key]
        # The pid is left in the file: harmless, since only a held lock refuses a run.
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
    self._handle = None

  def __enter__(self) -> "DirectoryLock":
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
