"""The one output policy of every command that writes (fit, score, benchmark, demo, figures, bench).

An :class:`OutputFolder` is one command's hold on its ``--out`` folder:

* **Lock.** ``<out>/.lake_interp.lock`` is held (``fcntl.flock``) for the whole run and records
  the holder (pid, hostname, process start time, run id, command). A second run into the same
  folder is refused with that record. The kernel drops the lock of a killed process, so a lock
  file left by a killed run is stale: it is taken over (said on stderr) and that run's temporary
  files are removed. Where the file system has no ``flock``, the pid, hostname and start time
  decide: a live process on this host (same start time) or any process on another host holds it.
* **Manifest.** ``<out>/lake_interp_manifest.jsonl`` lists every file the commands wrote there
  (path relative to ``--out``, sha256, size). A file is *owned* when the manifest records its
  current content; a command overwrites or deletes only owned files. Anything else is *foreign*:
  a command refuses to replace it (the error lists the files), except where the new content is
  byte-identical (then nothing needs writing and the file is left as it is). The manifest is an
  append-only journal while the command runs (the line is written before the file is renamed into
  place, so a kill can never leave an owned file unrecorded) and is rewritten sorted on close.
* **Atomic writes.** Every file is written to a temporary file in the same folder
  (``.lake_interp-tmp-<run id>-...``), then renamed over the target: a kill or a full disk leaves
  the old file or the new one, never a partial one under the real name, and the rerun works.
* **Names from data** (categories, image stems, defect types) pass :func:`safe_name`: no ``..``,
  no separators, no absolute paths; and every path, symlinks resolved, must stay inside ``--out``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Optional

__all__ = ["OutputError", "OutputFolder", "output_folder", "MANIFEST", "LOCK", "TMP_MARK", "safe_name", "owned_files",
           "write_file_atomic", "sha256_file"]

MANIFEST = "lake_interp_manifest.jsonl"
LOCK = ".lake_interp.lock"
TMP_MARK = ".lake_interp-tmp-"
RESERVED = (MANIFEST, LOCK)


class OutputError(ValueError):
    """A command may not write where it was asked to (foreign files, a running command, a name
    leading outside --out, a full disk); the message says what and what to do."""


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_name(name, what: str = "name") -> str:
    """``name`` as one path component inside --out, or OutputError (names coming from data)."""
    name = str(name)
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
           or name.startswith(TMP_MARK) or name in RESERVED or (len(name) > 1 and name[1] == ":"))
    if bad:
        raise OutputError(f"{what} {name!r} cannot be used as a file name inside the output folder "
                          "(empty, '.', '..', a path separator or a reserved name)")
    return name


def _proc_start(pid: int) -> Optional[str]:
    """Start time of a process (clock ticks since boot, /proc/<pid>/stat field 22); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict) -> bool:
    """Is the process of a lock record still running (same host, pid alive with the same start time)?"""
    if info.get("hostname") != socket.gethostname():
        return True  # cannot check another host: assume it runs
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _proc_start(pid)
    return start is None or info.get("start_time") in (None, start)


def _describe(info: dict) -> str:
    when = info.get("started")
    return (f"pid {info.get('pid')} on host {info.get('hostname')}"
            + (f", started {when}" if when else "") + (f": {info.get('command')}" if info.get("command") else ""))


def read_manifest(root) -> dict[str, list[str]]:
    """path -> recorded sha256 values (oldest first) of a folder's manifest; {} without one."""
    path = Path(root) / MANIFEST
    entries: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return entries
    for line in lines:
        try:
            e = json.loads(line)
            entries.setdefault(str(e["path"]), []).append(str(e["sha256"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill
    return entries


def owned_files(root) -> set[str]:
    """Paths (relative, posix) of the files under ``root`` whose content its manifest records."""
    root = Path(root)
    out = set()
    for rel, hashes in read_manifest(root).items():
        p = root / rel
        if p.is_file() and sha256_file(p) in hashes:
            out.add(rel)
    return out


def _no_space(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def write_file_atomic(dest, data: bytes) -> None:
    """``data`` to ``dest`` through a temporary file in the same folder and a rename (no manifest:
    for single files outside an output folder, e.g. ``bench --json``)."""
    dest = Path(dest)
    tmp = dest.with_name(f"{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}-{dest.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = "no space left on device" if _no_space(e) else (e.strerror or str(e))
        raise OutputError(f"writing {dest} failed ({reason}); nothing was replaced: fix that and run the same "
                          "command again") from e


_HELD: dict[str, "OutputFolder"] = {}  # folders this process holds (realpath -> holder)


@contextlib.contextmanager
def output_folder(root, command: str) -> Iterator["OutputFolder"]:
    """Hold ``root`` for ``command`` (an :class:`OutputFolder`); where this process already holds it
    (the CLI takes the lock before loading the model, the API function it calls takes it again),
    the same holder is yielded and released by its first owner."""
    root = Path(root)
    key = os.path.realpath(root) if root.exists() else None
    if key is not None and key in _HELD:
        yield _HELD[key]
        return
    with OutputFolder(root, command) as held:
        key = os.path.realpath(root)
        _HELD[key] = held
        try:
            yield held
        finally:
            _HELD.pop(key, None)


class OutputFolder:
    """One command's writes into one output folder (see the module docstring). Use as a context
    manager: ``with OutputFolder(out, "score") as o: o.write_text("scores.csv", text)``."""

    def __init__(self, root, command: str):
        self.root = Path(root)
        self.command = command
        self.run_id = secrets.token_hex(6)
        self._fd: Optional[int] = None
        self._manifest: dict[str, list[str]] = {}
        self._written: dict[str, tuple[str, int]] = {}
        self._journal = None
        self._n = 0
        self.took_over: Optional[dict] = None

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> "OutputFolder":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"{self.root} is a file, not a folder: choose another --out")
        self._created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the output folder {self.root}: {e.strerror or e}") from e
        self._acquire()
        self._manifest = read_manifest(self.root)

    def _acquire(self) -> None:
        import fcntl

        lock = self.root / LOCK
        for _ in range(100):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot create the lock file {lock} ({e.strerror or e}): choose another --out") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                have_flock = True
            except BlockingIOError:
                info = self._read_info(fd)
                os.close(fd)
                raise OutputError(f"{self.root} is in use by another lake-interp run ({_describe(info)}); wait for "
                                  f"it to finish or choose another --out") from None
            except OSError:  # no flock on this file system: the record decides
                have_flock = False
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between our open and our lock: try again
                os.close(fd)
                continue
            previous = self._read_info(fd)
            if previous:
                if not have_flock and _alive(previous):
                    os.close(fd)
                    raise OutputError(f"{self.root} is in use by another lake-interp run ({_describe(previous)}); "
                                      f"wait for it to finish or choose another --out (if that run is gone, "
                                      f"delete {lock})")
                self.took_over = previous
                print(f"lake-interp: taking over the stale lock of {self.root} ({_describe(previous)}: no longer "
                      "running)", file=sys.stderr)
                self._remove_tmp(previous.get("run_id"))
            info = {"pid": os.getpid(), "hostname": socket.gethostname(), "start_time": _proc_start(os.getpid()),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "run_id": self.run_id, "command": self.command}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            except OSError as e:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                reason = "no space left on device" if _no_space(e) else (e.strerror or str(e))
                raise OutputError(f"cannot write the lock file {lock} ({reason}); nothing was written: fix that "
                                  "and run the same command again") from e
            self._fd = fd
            return
        raise OutputError(f"could not lock {self.root} (its lock file keeps changing)")

    @staticmethod
    def _read_info(fd: int) -> dict:
        try:
            data = os.pread(fd, 1 << 16, 0)
            info = json.loads(data.decode()) if data.strip() else {}
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {"pid": "unknown"}

    def _remove_tmp(self, run_id) -> None:
        """Temporary files and folders of a killed run (named with its run id)."""
        if not run_id:
            return
        mark = f"{TMP_MARK}{run_id}-"
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in list(dirnames):
                if name.startswith(mark):
                    shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                    dirnames.remove(name)
            for name in filenames:
                if name.startswith(mark):
                    with contextlib.suppress(OSError):
                        (Path(dirpath) / name).unlink()

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            with contextlib.suppress(OSError, OutputError):
                self._compact()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.root / LOCK)
            os.close(self._fd)
            self._fd = None
            if getattr(self, "_created", False):  # a folder this run created and left empty: not left behind
                with contextlib.suppress(OSError):
                    self.root.rmdir()

    # ------------------------------------------------------------------ paths and ownership
    def resolve(self, rel) -> Path:
        """``rel`` (relative, '/'-separated) as a path inside the folder, or OutputError."""
        parts = PurePosixPath(str(rel).replace(os.sep, "/")).parts
        if not parts or PurePosixPath(str(rel)).is_absolute():
            raise OutputError(f"{rel!r} is not a relative path inside {self.root}")
        for part in parts:
            safe_name(part, "path component")
        p = self.root.joinpath(*parts)
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, os.path.realpath(p)]) != real_root:
            raise OutputError(f"{p} leads outside the output folder {self.root} (a symbolic link?): refused")
        return p

    @staticmethod
    def _key(rel) -> str:
        return PurePosixPath(str(rel).replace(os.sep, "/")).as_posix()

    def owns(self, rel) -> bool:
        key = self._key(rel)
        p = self.resolve(key)
        if not p.is_file():
            return False
        hashes = self._manifest.get(key, [])
        return bool(hashes) and sha256_file(p) in hashes

    def foreign(self, rels: Iterable) -> list[str]:
        """Those of ``rels`` that exist and are not owned (a folder where a file goes counts)."""
        out = []
        for rel in rels:
            p = self.resolve(rel)
            if (p.exists() or p.is_symlink()) and not self.owns(rel):
                out.append(self._key(rel))
        return out

    def claim(self, rels: Iterable, what: str = "") -> None:
        """Refuse, listing them, if any of the files this command will write exist and are foreign."""
        bad = self.foreign(rels)
        if bad:
            shown = ", ".join(bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
            raise OutputError(f"{self.root} holds {len(bad)} file(s) that {what or self.command} would overwrite and "
                              f"did not write: {shown}; move them away or choose another --out (nothing was changed)")

    def adopt(self, rel) -> None:
        """Record an existing file as owned (a file the caller has verified as its own record)."""
        p = self.resolve(rel)
        if p.is_file():
            self._append(self._key(rel), sha256_file(p), p.stat().st_size)

    # ------------------------------------------------------------------ writing
    def _append(self, key: str, digest: str, size: int) -> None:
        if self._journal is None:
            self._journal = open(self.root / MANIFEST, "a", encoding="utf-8")
        self._journal.write(json.dumps({"path": key, "sha256": digest, "size": size}) + "\n")
        self._journal.flush()
        self._manifest.setdefault(key, []).append(digest)
        self._written[key] = (digest, size)

    def tmp_path(self, dest: Path) -> Path:
        self._n += 1
        return dest.with_name(f"{TMP_MARK}{self.run_id}-{self._n}-{dest.name}")

    @contextlib.contextmanager
    def atomic(self, rel) -> Iterator[Path]:
        """Yields a temporary path to write ``rel`` to; on success it is recorded and renamed into place."""
        key = self._key(rel)
        dest = self.resolve(key)
        was_foreign = bool(self.foreign([key]))
        if dest.is_dir() and not dest.is_symlink():
            raise OutputError(f"{dest} is a folder where {self.command} writes a file: move it away or choose "
                              "another --out")
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp_path(dest)
            yield tmp
            if was_foreign:
                same = tmp.is_file() and dest.is_file() and sha256_file(tmp) == sha256_file(dest)
                tmp.unlink()
                if same:
                    return  # nothing to write: the file already holds exactly this
                self.claim([key])
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            self._append(key, sha256_file(tmp), tmp.stat().st_size)  # recorded before it lands
            os.replace(tmp, dest)
        except Exception as e:  # OSError, or a library's own error wrapping one (safetensors)
            if not isinstance(e, OSError) and "No space left on device" not in str(e):
                raise
            reason = ("no space left on device" if (isinstance(e, OSError) and _no_space(e))
                      or "No space left on device" in str(e) else (getattr(e, "strerror", None) or str(e)))
            raise OutputError(f"writing {dest} failed ({reason}); nothing was replaced: fix that and run the same "
                              "command again") from e
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def write_bytes(self, rel, data: bytes) -> Path:
        with self.atomic(rel) as tmp:
            tmp.write_bytes(data)
        return self.resolve(rel)

    def write_text(self, rel, text: str) -> Path:
        return self.write_bytes(rel, text.encode("utf-8"))

    def mkdir(self, rel) -> Path:
        p = self.resolve(rel)
        if p.exists() and not p.is_dir():
            raise OutputError(f"{p} is a file where {self.command} needs a folder: move it away or choose another --out")
        p.mkdir(parents=True, exist_ok=True)
        return p

    # ------------------------------------------------------------------ trees (generated data)
    def files_under(self, rel) -> list[str]:
        base = self.resolve(rel)
        out = []
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                out.append(self._key(Path(dirpath, name).relative_to(self.root).as_posix()))
        return sorted(out)

    def remove_tree(self, rel) -> None:
        """Delete a folder the commands wrote; refused (listing them) if it holds a file they did not."""
        base = self.resolve(rel)
        if not base.exists():
            return
        if base.is_symlink() or not base.is_dir():
            raise OutputError(f"{base} is not a folder written by lake-interp: move it away or choose another --out")
        self.claim(self.files_under(rel), f"{self.command} (replacing {self._key(rel)}/)")
        shutil.rmtree(base)

    def tmp_dir(self) -> Path:
        """A new temporary folder inside the output folder (removed if a later run takes over)."""
        self._n += 1
        p = self.root / f"{TMP_MARK}{self.run_id}-{self._n}"
        p.mkdir()
        return p

    def install_tree(self, tmp: Path, rel) -> Path:
        """Move a folder generated in ``tmp_dir()`` to ``rel`` (which must not exist), recording its files."""
        dest = self.resolve(rel)
        if dest.exists():
            raise OutputError(f"{dest} exists: remove_tree it first")
        for dirpath, _, filenames in os.walk(tmp):
            for name in filenames:
                p = Path(dirpath, name)
                self._append(self._key(f"{self._key(rel)}/{p.relative_to(tmp).as_posix()}"), sha256_file(p),
                             p.stat().st_size)
        os.replace(tmp, dest)
        return dest

    # ------------------------------------------------------------------ manifest on close
    def _compact(self) -> None:
        """Rewrite the manifest sorted, one line per owned file that exists (deterministic)."""
        if self._journal is None and not self._written and not self.took_over:
            return
        manifest = read_manifest(self.root)
        lines = []
        for key in sorted(manifest):
            p = self.root / key
            if not p.is_file():
                continue
            if key in self._written and self._written[key][1] == p.stat().st_size:
                digest = self._written[key][0]
                if digest != sha256_file(p):
                    continue
            else:
                digest = sha256_file(p)
                if digest not in manifest[key]:
                    continue
            lines.append(json.dumps({"path": key, "sha256": digest, "size": p.stat().st_size}) + "\n")
        dest = self.root / MANIFEST
        tmp = self.tmp_path(dest)
        try:
            tmp.write_text("".join(lines), encoding="utf-8")
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
