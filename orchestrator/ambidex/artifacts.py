"""artifacts: the content-hashed artifact store and the one verified load path.

Layout under the store root::

    .staging/<uuid>/            private (0700) work area, same filesystem as the rest
    models/<model>/<version>/   published model folders (dirs 0750, files 0640)
    blobs/<sha[:2]>/<sha256>    run artifacts, content-addressed

Publishing follows reliability.md: files are copied into a fresh staging dir while
hashing, each is flushed and fsynced, and the dir is ``os.replace``-d into place on
the same device, then its parent dir is fsynced. Every path is checked against a
grammar (after percent-decoding until stable) and by realpath to lie inside the
store before it is read, written or deleted.

:meth:`ArtifactStore.verified_path` / :meth:`ArtifactStore.open_verified_payload`
are the single road to a payload: containment, mode bits, format allowlist, size
and SHA-256 are checked immediately before the caller deserializes it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from .errors import ArtifactError

__all__ = ["ArtifactStore", "check_name", "check_version", "check_relpath", "ALLOWED_FORMATS", "sha256_file"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,9}$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_.+=@,-][A-Za-z0-9_.+=@, -]{0,254}$")
ALLOWED_FORMATS = ("joblib", "rds")
FILE_MODE, DIR_MODE, STAGING_MODE = 0o640, 0o750, 0o700
_CHUNK = 1 << 20


def _decode_until_stable(value: str, what: str) -> str:
    for _ in range(8):
        decoded = unquote(value)
        if decoded == value:
            return value
        value = decoded
    raise ArtifactError(f"Refusing {what} that is still percent-encoded after 8 decodings.",
                        code="artifact.path_escape", hint="Use a plain name.")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (``^[a-z][a-z0-9_-]{0,62}$``), else raise.

    >>> check_name("churn")
    'churn'
    """
    if not isinstance(name, str) or _decode_until_stable(name, "a model name") != name or not NAME_RE.match(name):
        raise ArtifactError(f"Invalid model name {name!r}: names match ^[a-z][a-z0-9_-]{{0,62}}$.",
                            code="artifact.path_escape", hint="Use lower-case letters, digits, '_' and '-'.")
    return name


def check_version(version) -> int:
    """Return ``version`` as a positive int, accepting ints and decimal strings only."""
    if isinstance(version, int) and not isinstance(version, bool) and 0 < version < 10**10:
        return version
    if isinstance(version, str) and _VERSION_RE.match(_decode_until_stable(version, "a version")) \
            and _VERSION_RE.match(version):
        return int(version)
    raise ArtifactError(f"Invalid model version {version!r}: versions are positive integers.",
                        code="artifact.path_escape", hint="Pass a version number such as 3.")


def check_relpath(relpath: str) -> str:
    """Return ``relpath`` (a ``/``-separated path inside a folder) if it follows the grammar, else raise.

    >>> check_relpath("plots/roc.png")
    'plots/roc.png'
    """
    ok = isinstance(relpath, str) and 0 < len(relpath) <= 512
    if ok:
        ok = _decode_until_stable(relpath, "a path") == relpath and "\\" not in relpath
        parts = relpath.split("/")
        ok = ok and all(p not in (".", "..") and _COMPONENT_RE.match(p) for p in parts)
    if not ok:
        raise ArtifactError(
            f"Refusing path {relpath!r}: artifact paths are relative, '/'-separated, without '..', "
            "and use letters, digits, space and ._+=@,-",
            code="artifact.path_escape", hint="Rename the file in the model folder.")
    return relpath


def sha256_file(path: Path) -> tuple[str, int]:
    """The (sha256 hex digest, size) of a file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(path: Path, mode: int = DIR_MODE) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir() or path.is_symlink():
            raise ArtifactError(f"{path} exists and is not a directory.", code="artifact.path_escape",
                                hint="Remove it from the artifact store.") from None
        return
    os.chmod(path, mode)  # whatever the umask


def _write_stream(src: BinaryIO, dst: Path) -> tuple[str, int]:
    """Copy ``src`` into a new file ``dst`` (0640), hashing while writing; flush and fsync it."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    h, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), FILE_MODE)
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest(), size


class ArtifactStore:
    """A folder of published model versions and content-addressed blobs.

    >>> store = ArtifactStore(Path("artifacts"))  # doctest: +SKIP
    >>> staging, files = store.stage_folder(Path("out/model"))  # doctest: +SKIP
    """

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._real = os.path.realpath(self.root)
        _mkdir(self.root / ".staging", STAGING_MODE)
        _mkdir(self.root / "models")
        _mkdir(self.root / "blobs")

    # -- containment ---------------------------------------------------------------------------
    def _inside(self, path: Path, base: str | None = None) -> Path:
        """``path`` resolved by realpath, refused unless it lies inside ``base`` (default: the store)."""
        base = base or self._real
        real = os.path.realpath(path)
        if not (real == base or real.startswith(base.rstrip(os.sep) + os.sep)):
            raise ArtifactError(
                f"Refusing {path}: it resolves to {real}, outside the artifact store {base}.",
                code="artifact.path_escape",
                hint="Something planted a symlink or '..' in the store; remove it and run 'ambidex verify'.",
                path=str(path), resolved=real)
        return Path(real)

    def version_dir(self, relpath: str) -> Path:
        """The absolute folder of a published version from its relative path ``models/<name>/<version>``."""
        parts = relpath.split("/") if isinstance(relpath, str) else []
        if len(parts) != 3 or parts[0] != "models":
            raise ArtifactError(f"Invalid version path {relpath!r}: expected models/<name>/<version>.",
                                code="artifact.path_escape", hint="Run 'ambidex verify'.")
        check_name(parts[1])
        check_version(parts[2])
        return self._inside(self.root / relpath)

    # -- writing -------------------------------------------------------------------------------
    def new_staging(self) -> Path:
        """A fresh private (0700) staging directory inside the store."""
        path = self.root / ".staging" / uuid.uuid4().hex
        _mkdir(path, STAGING_MODE)
        return path

    def stage_folder(self, src: Path, *, exclude: tuple[str, ...] = ("model.json",)) -> tuple[Path, dict]:
        """Copy the folder ``src`` into a new staging dir; return it and ``{relpath: {sha256, size}}``.

        Symlinks and special files in ``src`` are refused; ``exclude`` names top-level
        files left out (the registry writes the completed ``model.json`` itself).
        """
        src = Path(src)
        staging = self.new_staging()
        files: dict[str, dict] = {}
        try:
            for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
                here = Path(dirpath)
                rel_dir = here.relative_to(src).as_posix()
                for entry in sorted(dirnames) + sorted(filenames):
                    p = here / entry
                    rel = entry if rel_dir == "." else f"{rel_dir}/{entry}"
                    check_relpath(rel)
                    st = os.lstat(p)
                    if stat.S_ISLNK(st.st_mode):
                        raise ArtifactError(f"Model folder {src} contains a symlink {rel}; refusing to follow it.",
                                            code="artifact.path_escape", hint="Copy the file itself into the folder.")
                    if stat.S_ISDIR(st.st_mode):
                        _mkdir(staging / rel)
                    elif stat.S_ISREG(st.st_mode):
                        if rel in exclude:
                            continue
                        with open(p, "rb") as f:
                            digest, size = _write_stream(f, staging / rel)
                        files[rel] = {"sha256": digest, "size": size}
                    else:
                        raise ArtifactError(f"Model folder {src} contains {rel}, which is not a regular file.",
                                            code="artifact.path_escape", hint="Remove it from the folder.")
                _fsync_dir(staging / rel_dir if rel_dir != "." else staging)
        except BaseException:
            self.discard(staging)
            raise
        return staging, dict(sorted(files.items()))

    def write_file(self, folder: Path, relpath: str, data: bytes) -> dict:
        """Write ``data`` as a new file in a staging ``folder``, fsynced, 0640; return ``{sha256, size}``."""
        target = self._inside(Path(folder) / check_relpath(relpath))
        with io.BytesIO(data) as src:
            digest, size = _write_stream(src, target)
        _fsync_dir(target.parent)
        return {"sha256": digest, "size": size}

    def publish(self, staging: Path, name: str, version: int) -> str:
        """Move a staging dir to ``models/<name>/<version>`` atomically; return that relative path."""
        name, version = check_name(name), check_version(version)
        staging = self._inside(staging, os.path.join(self._real, ".staging"))
        _mkdir(self.root / "models" / name)
        parent = self._inside(self.root / "models" / name)
        target = parent / str(version)
        if os.path.lexists(target):
            raise ArtifactError(f"{target} already exists; refusing to overwrite a published version.",
                                code="artifact.conflict", hint="Run 'ambidex verify' and 'ambidex gc'.")
        if os.stat(staging).st_dev != os.stat(parent).st_dev:
            raise ArtifactError(f"Staging dir {staging} and {parent} are on different filesystems; "
                                "the rename would not be atomic.", code="artifact.cross_device",
                                hint="Keep the whole artifact store on one filesystem.")
        os.chmod(staging, DIR_MODE)
        os.replace(staging, target)
        _fsync_dir(parent)
        _fsync_dir(staging.parent)
        return f"models/{name}/{version}"

    def discard(self, path: Path) -> None:
        """Delete a staging dir or a published version folder (only those), e.g. after a failed publish."""
        path = Path(path)
        if not os.path.lexists(path):
            return
        real = self._inside(path)
        rel = Path(real).relative_to(self._real).parts
        if not ((len(rel) == 2 and rel[0] == ".staging") or (len(rel) == 3 and rel[0] == "models")):
            raise ArtifactError(f"Refusing to delete {path}: not a staging dir or version folder.",
                                code="artifact.path_escape", hint="This is a bug; please report it.")
        shutil.rmtree(real)
        _fsync_dir(Path(real).parent)

    def put_blob(self, path: Path) -> dict:
        """Store a file content-addressed under ``blobs/``; return ``{sha256, size, relpath}``."""
        tmp = self.root / ".staging" / f"{uuid.uuid4().hex}.blob"
        try:
            with open(path, "rb") as f:
                digest, size = _write_stream(f, tmp)
            prefix = self.root / "blobs" / digest[:2]
            _mkdir(prefix)
            target = self._inside(prefix) / digest
            if os.path.lexists(target):
                os.unlink(tmp)
            else:
                os.replace(tmp, target)
                _fsync_dir(prefix)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        return {"sha256": digest, "size": size, "relpath": f"blobs/{digest[:2]}/{digest}"}

    # -- reading -------------------------------------------------------------------------------
    def verify_files(self, relpath: str, files: Mapping[str, Mapping]) -> list[dict]:
        """Check a published folder against ``{relpath: {sha256, size}}``; return the problems found.

        Each problem is ``{path, problem, expected, actual}`` with ``problem`` one of
        ``missing``, ``size``, ``sha256``, ``escape``, ``mode``, ``unexpected``.
        """
        problems: list[dict] = []
        try:
            folder = self.version_dir(relpath)
        except ArtifactError as e:
            return [{"path": relpath, "problem": "escape", "expected": None, "actual": e.message}]
        if not folder.is_dir():
            return [{"path": relpath, "problem": "missing", "expected": "directory", "actual": None}]
        for rel, want in sorted(files.items()):
            try:
                self._check_file(folder, rel, want, relpath)
            except ArtifactError as e:
                problems.append({"path": f"{relpath}/{rel}", "problem": e.details.get("problem", "escape"),
                                 "expected": e.details.get("expected"), "actual": e.details.get("actual")})
        for dirpath, _dirs, names in os.walk(folder):
            for n in names:
                rel = (Path(dirpath) / n).relative_to(folder).as_posix()
                if rel != "model.json" and rel not in files:
                    problems.append({"path": f"{relpath}/{rel}", "problem": "unexpected",
                                     "expected": None, "actual": "present"})
        return problems

    def verified_path(self, version, relpath: str | None = None) -> Path:
        """The absolute path of a file of a registered version, checked just before use.

        ``version`` is a ModelVersion, or a mapping with ``path`` and ``manifest``, or
        a completed manifest. ``relpath`` defaults to the payload, whose format must be
        in the allowlist. Raises :class:`ArtifactError` (``artifact.hash_mismatch``,
        ``artifact.path_escape``, ``artifact.format_not_allowed``, ...).
        """
        path, f = self._open_checked(version, relpath)
        f.close()
        return path

    def open_verified_payload(self, version, relpath: str | None = None) -> BinaryIO:
        """Like :meth:`verified_path`, but return the open, already hashed file at offset 0.

        Deserializing from this handle reads the very bytes that were hashed.

        >>> with store.open_verified_payload(mv) as f:  # doctest: +SKIP
        ...     model = joblib.load(f)
        """
        return self._open_checked(version, relpath)[1]

    def _open_checked(self, version, relpath):
        folder_rel, manifest = _version_parts(version)
        files = manifest.get("files") or {}
        runtime = manifest.get("runtime") or {}
        payload = runtime.get("payload")
        relpath = relpath or payload
        if relpath is None:
            raise ArtifactError("The manifest names no runtime.payload.", code="artifact.format_not_allowed",
                                hint="Re-register the model with a complete model.json.")
        if relpath == payload and runtime.get("format") not in ALLOWED_FORMATS:
            raise ArtifactError(
                f"Refusing to load {folder_rel}/{relpath}: format {runtime.get('format')!r} is not allowed "
                f"(allowed: {', '.join(ALLOWED_FORMATS)}).", code="artifact.format_not_allowed",
                hint="Save the model as joblib (Python) or rds (R) and register it again.")
        if relpath not in files:
            raise ArtifactError(f"{folder_rel}/{relpath} has no recorded digest; refusing to load it.",
                                code="artifact.hash_mismatch", hint="Run 'ambidex verify'.", path=relpath)
        return self._check_file(self.version_dir(folder_rel), relpath, files[relpath], folder_rel, keep_open=True)

    def _check_file(self, folder: Path, rel: str, want: Mapping, folder_rel: str, keep_open: bool = False):
        label = f"{folder_rel}/{rel}"
        real = self._inside(folder / check_relpath(rel), str(folder))
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ArtifactError(f"{label} is missing from the artifact store.", code="artifact.missing",
                                hint="Restore it from backup or re-register the model; run 'ambidex verify'.",
                                problem="missing", expected=want.get("sha256"), actual=None) from None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o002:
                raise ArtifactError(f"{label} is not a regular, non-world-writable file "
                                    f"(mode {stat.filemode(st.st_mode)}); refusing to load it.",
                                    code="artifact.unsafe_mode", hint="chmod 0640 it after checking its origin.",
                                    problem="mode", expected="0640", actual=oct(st.st_mode & 0o777))
            h, size = hashlib.sha256(), 0
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
            if size != want.get("size") or h.hexdigest() != want.get("sha256"):
                problem = "size" if size != want.get("size") else "sha256"
                raise ArtifactError(
                    f"{label} does not match its recorded digest: expected sha256 {want.get('sha256')} "
                    f"({want.get('size')} bytes), found {h.hexdigest()} ({size} bytes). It was not loaded.",
                    code="artifact.hash_mismatch",
                    hint="The file changed after registration; do not use it. Run 'ambidex verify' and "
                         "re-register the model from its run.",
                    path=label, problem=problem, expected=want.get("sha256"), actual=h.hexdigest())
            f.seek(0)
        except BaseException:
            f.close()
            raise
        if not keep_open:
            f.close()
            return real
        return real, f

    def blob_path(self, sha256: str) -> Path:
        """The verified path of a blob by its digest."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            raise ArtifactError(f"Invalid blob digest {sha256!r}.", code="artifact.path_escape",
                                hint="Pass a sha256 hex digest.")
        path = self._inside(self.root / "blobs" / sha256[:2] / sha256)
        digest, _ = sha256_file(path)
        if digest != sha256:
            raise ArtifactError(f"Blob {sha256} is corrupt (its content hashes to {digest}).",
                                code="artifact.hash_mismatch", hint="Run 'ambidex verify'.")
        return path


def _version_parts(version) -> tuple[str, dict]:
    if hasattr(version, "path") and hasattr(version, "manifest"):
        path, manifest = version.path, version.manifest
    elif isinstance(version, Mapping) and "path" in version and "manifest" in version:
        path, manifest = version["path"], version["manifest"]
    elif isinstance(version, Mapping) and "files" in version:
        path, manifest = f"models/{check_name(version.get('name'))}/{check_version(version.get('version'))}", version
    else:
        raise TypeError("expected a ModelVersion, a {path, manifest} mapping or a completed manifest")
    if isinstance(manifest, (str, bytes)):
        manifest = json.loads(manifest)
    return path, manifest

