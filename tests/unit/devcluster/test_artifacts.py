"""devcluster's artifact block against a real loopback HTTP server: download, checksum, unpacking,
path safety, and the task events a failed download produces."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runtime_support import Cluster, S, http_task, job, node, run_bounded, until

from nomad_triton.devcluster.artifacts import ArtifactError, fetch


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen_headers: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Files.seen_headers.append(dict(self.headers))
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        _Files.files = {}


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    alloc = tmp_path / "alloc1"
    task = alloc / "web"
    task.mkdir(parents=True)
    return task, alloc


def _same(text: str) -> str:
    return text


def test_tarball_with_checksum_is_unpacked_into_the_destination(tmp_path: Path, server: str) -> None:
    data = _tgz({"m/config.pbtxt": b'name: "m"', "m/1/model.onnx": b"\x08\x07"})
    _Files.files = {"/repo.tar.gz": data}
    task, alloc = _dirs(tmp_path)
    dest = fetch({"GetterSource": f"{server}/repo.tar.gz", "RelativeDest": "local/models",
                  "GetterOptions": {"checksum": f"sha256:{hashlib.sha256(data).hexdigest()}"},
                  "GetterHeaders": {"X-Token": "abc"}}, task, alloc, _same)
    assert dest == (task / "local" / "models").resolve()
    assert (dest / "m" / "config.pbtxt").read_bytes() == b'name: "m"'
    assert (dest / "m" / "1" / "model.onnx").read_bytes() == b"\x08\x07"
    assert _Files.seen_headers[-1].get("X-Token") == "abc"
    assert not any(p.name.startswith(".artifact-") for p in task.iterdir())  # temp download removed


def test_checksum_mismatch_unpacks_nothing(tmp_path: Path, server: str) -> None:
    _Files.files = {"/repo.tgz": _tgz({"a.txt": b"x"})}
    task, alloc = _dirs(tmp_path)
    with pytest.raises(ArtifactError, match=r"checksum mismatch for repo.tgz: expected sha256:0{64}, got sha256:"):
        fetch({"GetterSource": f"{server}/repo.tgz", "GetterOptions": {"checksum": "sha256:" + "0" * 64}},
              task, alloc, _same)
    assert not (task / "local").exists()
    with pytest.raises(ArtifactError, match="invalid checksum 'sha256:12'"):
        fetch({"GetterSource": f"{server}/repo.tgz", "GetterOptions": {"checksum": "sha256:12"}}, task, alloc, _same)


def test_http_errors_and_unsupported_sources(tmp_path: Path, server: str) -> None:
    task, alloc = _dirs(tmp_path)
    with pytest.raises(ArtifactError, match=r"GET .*/missing.tgz: bad response code: 404"):
        fetch({"GetterSource": f"{server}/missing.tgz"}, task, alloc, _same)
    with pytest.raises(ArtifactError, match="gcs:: sources are fetched by a real Nomad client"):
        fetch({"GetterSource": "gcs::https://www.googleapis.com/storage/v1/b/m.tgz"}, task, alloc, _same)
    with pytest.raises(ArtifactError, match="escapes the allocation directory"):
        fetch({"GetterSource": f"{server}/x", "RelativeDest": "../../outside"}, task, alloc, _same)


def test_archive_members_cannot_escape(tmp_path: Path, server: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
    _Files.files = {"/bad.zip": buf.getvalue(), "/bad.tgz": _tgz({"../../evil.txt": b"x"})}
    task, alloc = _dirs(tmp_path)
    with pytest.raises(ArtifactError, match="escapes the destination"):
        fetch({"GetterSource": f"{server}/bad.zip"}, task, alloc, _same)
    with pytest.raises(ArtifactError, match="'../../evil.txt' escapes the destination"):
        fetch({"GetterSource": f"{server}/bad.tgz"}, task, alloc, _same)
    assert not list(tmp_path.rglob("evil.txt"))


def test_plain_file_modes_and_local_source(tmp_path: Path, server: str) -> None:
    _Files.files = {"/w.bin": b"weights", "/r.tgz": b"not really"}
    task, alloc = _dirs(tmp_path)
    fetch({"GetterSource": f"{server}/w.bin"}, task, alloc, _same)
    assert (task / "local" / "w.bin").read_bytes() == b"weights"
    fetch({"GetterSource": f"{server}/w.bin", "GetterMode": "file", "RelativeDest": "local/renamed"},
          task, alloc, _same)
    assert (task / "local" / "renamed").read_bytes() == b"weights"
    fetch({"GetterSource": f"{server}/r.tgz", "GetterOptions": {"archive": "false"}}, task, alloc, _same)
    assert (task / "local" / "r.tgz").read_bytes() == b"not really"
    local = tmp_path / "src.tgz"
    local.write_bytes(_tgz({"k.txt": b"local"}))
    fetch({"GetterSource": f"file://{local}", "RelativeDest": "local/from-file"}, task, alloc, _same)
    assert (task / "local" / "from-file" / "k.txt").read_bytes() == b"local"


def test_task_starts_after_its_artifact_and_a_failed_one_is_a_task_event(tmp_path: Path, server: str) -> None:
    _Files.files = {"/site.tgz": _tgz({"index.html": b"from artifact"})}

    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            good = http_task()
            good["Artifacts"] = [{"GetterSource": f"{server}/site.tgz", "RelativeDest": "local/site"}]
            c.register(job(tasks=[good], checks=False))
            a = (await until(lambda: [a for a in c.allocs() if a["ClientStatus"] == "running"], what="running"))[0]
            served = tmp_path / "state" / "allocs" / a["ID"] / "web" / "local" / "site" / "index.html"
            assert served.read_bytes() == b"from artifact"
            types = [e["Type"] for e in a["TaskStates"]["web"]["Events"]]
            assert types.index("Downloading Artifacts") < types.index("Started"), types

            bad = http_task()
            bad["Artifacts"] = [{"GetterSource": f"{server}/gone.tgz"}]
            c.register(job("bad", tasks=[bad], checks=False,
                           restart={"Attempts": 1, "Interval": int(60 * S), "Delay": int(0.05 * S), "Mode": "fail"}))
            b = (await until(lambda: [a for a in c.allocs("bad") if a["ClientStatus"] == "failed"], what="failed"))[0]
            events = b["TaskStates"]["web"]["Events"]
            failed = [e for e in events if e["Type"] == "Failed Artifact Download"]
            assert len(failed) == 2 and "bad response code: 404" in failed[0]["DownloadError"], events
            assert failed[0]["DisplayMessage"].startswith("Failed to download artifacts: GET ")
            assert [e["Type"] for e in events].count("Restarting") == 1 and events[-1]["Type"] == "Not Restarting"
        finally:
            await c.rt.shutdown()

    run_bounded(main(), 90.0)
