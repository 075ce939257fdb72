"""Small file helpers shared by the model package, the pipeline and app.py.

One atomic writer and one file hash, so every file the project writes appears the same
way (DESIGN.md invariant 6) and every hash is computed the same way:

* `atomic_path` hands out a hidden temporary name in the destination directory (same
  filesystem, so `os.replace` is an atomic rename); once the caller has written it, the
  data are fsynced (a crash right after the rename cannot leave an empty file under the
  final name), the file gets the mode of the file it replaces, or for a new file the mode
  a plain `open` would give (the temporary is made 0600; these files are for sharing; a
  user who made a page 0600 keeps it private when it is rewritten: `kept_mode`), and it
  is renamed into place. On any error, Ctrl-C
  included, the temporary file is removed and the old file, if any, is untouched.
* `sha256_file` streams the file in 4 MiB chunks: checkpoints are up to 512 MiB.

Temporary names carry the writer's host and process id (`temp_name`,
`.NAME.eo2sar-tmp-HOST-PID-RANDOM.TAG`): a process killed outright (SIGKILL, the OOM
killer) cannot remove its temporary file, so the next run removes those of dead
processes on this host (`remove_stale_temps`, `remove_stale_temps_in`) and leaves a live
run's, or another host's on a shared filesystem, alone (docs/faults.md).

`fault_point` is a TEST HOOK, inert unless the environment asks for it: the fault tests
(tests/faults/) kill a real run at a named moment with it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import shutil
import signal
import socket
import stat
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "FAULT_ENV",
    "TMP_MARK",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "fault_point",
    "kept_mode",
    "no_space_reason",
    "remove_stale_temps",
    "remove_stale_temps_in",
    "sha256_file",
    "temp_name",
]

TMP_MARK = ".eo2sar-tmp"
FAULT_ENV = "EO2SAR_FAULT_POINT"
#: a failed write with less than this free in the target folder is reported as a full
#: disk: GDAL's ("Write failed. See previous exception for details.") and torch's
#: ("unexpected pos ...") write errors carry no errno
LOW_SPACE_BYTES = 16 * 2**20

_CHUNK = 4 * 1024 * 1024


def _read_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask(0) would
    briefly let files made by other threads, e.g. Dask workers, be world-writable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o22)  # elsewhere: once, at import, before any worker thread exists
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _plain_open_mode() -> int:
    return 0o666 & ~_UMASK


def kept_mode(path: str | os.PathLike[str]) -> int:
    """The permission bits a rewrite of `path` should have: those of the regular file it
    replaces (without set-id bits) if this user owns it, else a plain `open`'s. Without
    this an atomic rewrite would widen a file its owner had narrowed (a 0600 viewer page
    becoming 0644); a file of another user's (planted 0666 in a shared folder) lends its
    mode to nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return _plain_open_mode()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return _plain_open_mode()
    return stat.S_IMODE(st.st_mode) & 0o777


def _host() -> str:
    """This host's name, reduced to characters safe in a file name (no `-`: separator)."""
    return "".join(c for c in socket.gethostname() if c.isalnum() or c == "_") or "host"


def temp_name(final: Path, tag: str, suffix: str = ".tif") -> Path:
    """Hidden temporary name beside `final` (same filesystem, so os.replace is atomic):
    `.NAME.eo2sar-tmp-HOST-PID-RANDOM.TAG<suffix>`; HOST and PID let a later run tell a
    dead writer's leftovers from a live run's files (`remove_stale_temps`)."""
    final = Path(final)
    unique = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    return final.parent / f".{final.name}{TMP_MARK}-{unique}.{tag}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's live process (or a nonsense pid: not ours to judge)
    return True


def _remove_dead(candidates: Iterable[Path]) -> list[Path]:
    """Unlink the eo2sar temporaries among `candidates` written by dead processes of this
    host (the HOST-PID after TMP_MARK in the name); returns the removed paths."""
    host, mark = _host(), f"{TMP_MARK}-"
    removed: list[Path] = []
    for p in candidates:
        at = p.name.find(mark)
        parts = p.name[at + len(mark):].split("-", 2) if at > 0 else []
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _pid_alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def remove_stale_temps(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of `final` left by dead processes of this host.

    Called when a new run starts writing `final` (never in a dry run, never before the
    checks). Files of live processes (a concurrent run) and of other hosts (a shared
    filesystem) are kept. Returns the removed paths.
    """
    final = Path(final)
    prefix = glob.escape(f".{final.name}{TMP_MARK}-")
    return _remove_dead(final.parent.glob(f"{prefix}*"))


def remove_stale_temps_in(folder: str | os.PathLike[str]) -> list[Path]:
    """`remove_stale_temps` for every file of `folder` (a training run's checkpoints/)."""
    return _remove_dead(Path(folder).glob(f".*{glob.escape(TMP_MARK)}-*"))


def no_space_reason(exc: BaseException, folder: str | os.PathLike[str]) -> str | None:
    """"no space left on device (FOLDER, N MiB free)" if `exc`, a failed write into
    `folder`, was a full disk: errno ENOSPC, or under LOW_SPACE_BYTES free there (measure
    before removing the temporary files). None otherwise."""
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if getattr(exc, "errno", None) != errno.ENOSPC and (free is None
                                                         or free >= LOW_SPACE_BYTES):
        return None
    left = "" if free is None else f", {free / 2**20:.1f} MiB free"
    return f"no space left on device ({folder}{left})"


def fault_point(name: str) -> None:
    """TEST HOOK: SIGKILL this process here if ``EO2SAR_FAULT_POINT`` asks for `name`.

    ``EO2SAR_FAULT_POINT=NAME`` kills at the first arrival at point NAME,
    ``NAME@N`` at the N-th. Unset (always, outside tests/faults/) it costs one dict
    look-up. It exists because a kill from outside cannot hit "during the COG conversion"
    or "during the manifest write" reliably; the points are named where they are called
    (docs/faults.md lists them).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_fault_hits: dict[str, int] = {}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; write it in the `with` body. On a normal
    exit it is fsynced and renamed to `path`; on an exception it is removed (after a
    SIGKILL, by the next run: `remove_stale_temps`)."""
    path = Path(path)
    tmp = temp_name(path, "tmp", suffix="")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, kept_mode(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Full hex sha256 of a file, read in 4 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# Config files


#: Largest YAML config file read (a config is a few dozen keys: kilobytes).
MAX_CONFIG_BYTES = 1 * 2**20


class YamlConfigError(ValueError):
    """A YAML config file that cannot be read safely; callers turn it into their own
    typed error (pipeline.ConfigError, ugatit.UgatitError) with the path and a hint."""


def _no_alias_loader() -> type:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """yaml.SafeLoader that refuses aliases (`*name`).

        Why refuse them rather than bound their expansion: a config file is a flat mapping
        of a few dozen scalar settings, where an alias saves nothing, while a 300-byte file
        of nested aliases (a "billion laughs") expands into billions of references that
        any later walk over the value (a repr in an error message, a hash) takes gigabytes
        and minutes to visit. An anchor alone is harmless and is left alone."""

        def compose_node(self, parent: object, index: object) -> object:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise YamlConfigError(
                    f"YAML aliases are not accepted in a config file (line "
                    f"{event.start_mark.line + 1}: *{str(event.anchor)[:40]})")
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_yaml_config(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> object:
    """The parsed content of a YAML config file, bounded: at most ``max_bytes`` read,
    aliases refused, a nesting too deep for the parser an error. Raises FileNotFoundError
    and YamlConfigError (one line, no repr of the content)."""
    import yaml

    with path.open("rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise YamlConfigError(f"config file is larger than {max_bytes // 2**20} MiB")
    try:
        return yaml.load(raw, Loader=_no_alias_loader())  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise YamlConfigError("config file is nested too deeply to read") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise YamlConfigError(f"cannot read the config file ({first[:200]})") from None
