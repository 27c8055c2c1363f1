"""The `artifact` block for devcluster tasks: http(s) and local files, checksum, archive unpacking.

Behaviour follows Nomad's documented artifact block: `destination` (default "local/") is relative
to the task directory and may not escape the allocation directory; `mode` is any|file|dir;
`options.checksum = "<md5|sha1|sha256|sha512>:<hex>"` is verified before anything is unpacked;
archives (tar, tar.gz/tgz, tar.bz2, tar.xz, zip) are unpacked unless `options.archive = "false"`;
`headers` are sent with the request. Sources with a forced getter (s3::, gcs::, git::, hg::) are
what a real Nomad client fetches; devcluster refuses them with a clear reason. Downloads verify TLS.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

DOWNLOAD_TIMEOUT_S = 60.0
_ARCHIVES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
_HASHES = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


class ArtifactError(Exception):
    """Why one artifact could not be fetched; the text becomes the task event's DownloadError."""


def _checksum(spec: str) -> tuple[str, str]:
    kind, sep, value = spec.partition(":")
    kind, value = kind.strip().lower(), value.strip().lower()
    if not sep or kind not in _HASHES or len(value) != _HASHES[kind] or any(c not in "0123456789abcdef" for c in value):
        raise ArtifactError(f"invalid checksum {spec!r}: expected <md5|sha1|sha256|sha512>:<hex digest>")
    return kind, value


def _download(source: str, headers: dict[str, str], dest: Path) -> None:
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        try:
            with httpx.stream("GET", source, headers=headers, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True,
                              verify=True) as resp:
                if resp.status_code != 200:
                    raise ArtifactError(f"GET {source}: bad response code: {resp.status_code}")
                with dest.open("wb") as out:
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise ArtifactError(f"GET {source}: {type(exc).__name__}: {exc}") from None
        return
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(source)
    if parsed.scheme not in ("", "file") or not path.is_absolute():
        raise ArtifactError(f"unsupported source {source!r}: devcluster fetches http(s) URLs and absolute "
                            "local paths (file:// or /path)")
    if not path.is_file():
        raise ArtifactError(f"{source}: no such file")
    shutil.copyfile(path, dest)


def _archive_kind(name: str) -> str | None:
    lower = name.lower()
    return next((ext for ext in _ARCHIVES if lower.endswith(ext)), None)


def _unpack(archive: Path, kind: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()

    def inside(name: str) -> None:
        if not (root / name).resolve().is_relative_to(root):
            raise ArtifactError(f"archive member {name!r} escapes the destination")

    try:
        if kind == ".zip":
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    inside(member)
                zf.extractall(dest)
        else:
            # Checked by hand: tarfile's extraction filters need Python >= 3.11.4 (Debian 12 has 3.11.2).
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    inside(m.name)
                    if m.islnk() or m.issym():
                        inside(str(Path(m.name).parent / m.linkname) if m.issym() else m.linkname)
                    elif not (m.isfile() or m.isdir()):
                        raise ArtifactError(f"archive member {m.name!r} is not a file, folder or link")
                tf.extractall(dest, members=members)
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"error unpacking {archive.name}: {exc}") from None


def fetch(artifact: dict[str, Any], task_dir: Path, alloc_dir: Path, interpolate: Any) -> Path:
    """Fetch one artifact into the task directory; returns where it landed. Raises ArtifactError.

    `interpolate(text)` fills runtime variables (${NOMAD_*}, ${attr.*}) in source and destination.
    """
    source = interpolate(str(artifact.get("GetterSource") or ""))
    if not source:
        raise ArtifactError("artifact source is empty")
    forced, sep, _rest = source.partition("::")
    if sep and "/" not in forced:
        raise ArtifactError(f"{forced}:: sources are fetched by a real Nomad client; devcluster fetches http(s) "
                            "and local files only")
    options = {k: interpolate(str(v)) for k, v in (artifact.get("GetterOptions") or {}).items()}
    headers = {k: interpolate(str(v)) for k, v in (artifact.get("GetterHeaders") or {}).items()}
    mode = str(artifact.get("GetterMode") or "any")
    if mode not in ("any", "file", "dir"):
        raise ArtifactError(f"invalid mode {mode!r} (any, file or dir)")
    dest = (task_dir / interpolate(str(artifact.get("RelativeDest") or "local/"))).resolve()
    if not dest.is_relative_to(alloc_dir.resolve()):
        raise ArtifactError(f"destination {artifact.get('RelativeDest')!r} escapes the allocation directory")
    name = Path(unquote(urlparse(source).path)).name or "artifact"
    expected = _checksum(options["checksum"]) if "checksum" in options else None
    with tempfile.TemporaryDirectory(dir=task_dir, prefix=".artifact-") as tmp:
        downloaded = Path(tmp) / name
        _download(source, headers, downloaded)
        if expected is not None:
            kind, want = expected
            digest = hashlib.new(kind)
            with downloaded.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != want:
                raise ArtifactError(f"checksum mismatch for {name}: expected {kind}:{want}, got {kind}:{digest.hexdigest()}")
        archive = _archive_kind(name) if options.get("archive", "true").lower() != "false" else None
        if mode == "file":
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(downloaded, dest)
        elif archive:
            _unpack(downloaded, archive, dest)
        elif mode == "dir":
            raise ArtifactError(f"{name} is not an archive but mode is \"dir\"")
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.move(downloaded, dest / name)
    return dest


def fetch_all(artifacts: list[dict[str, Any]], task_dir: Path, alloc_dir: Path, interpolate: Any) -> None:
    """Fetch every artifact of a task in order; the first failure stops (as the task cannot start)."""
    task_dir.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        fetch(artifact, task_dir, alloc_dir, interpolate)
