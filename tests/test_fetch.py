"""Official-source registry and downloader, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from stisr.data import source_registry, transfer
from stisr.data.fetch import FetchError, fetch
from stisr.data.source_registry import Source, SourceError, load_sources

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB: several read chunks would be needed at 64 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves registered paths; each path has a behaviour the test can switch."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviour: dict[str, str] = {}
        self.cut_times: dict[str, int] = {}
        self.requests: list[dict] = []  # path, query, headers, status
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                owner._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
        self.requests[-1]["status"] = status
        h.send_response(status)
        headers.setdefault("Content-Type", "application/octet-stream")
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        self.requests.append({"path": parsed.path, "query": query, "headers": dict(h.headers)})
        mode = self.behaviour.get(parsed.path, "ok")
        if mode == "500" or parsed.path not in self.files:
            status = 500 if mode == "500" else 404
            self._reply(h, status, b"oops", Content_Type="text/plain")
            return
        data = self.files[parsed.path]
        if mode == "wrong":
            data = bytes(reversed(data))
        if mode == "gdrive" and "uuid" not in query:
            page = (
                "<!DOCTYPE html><html><body><p>Google Drive can't scan this file for viruses."
                '</p><form id="download-form" action="/download" method="get">'
                '<input type="submit" value="Download anyway">'
                f'<input type="hidden" name="id" value="{query.get("id", "")}">'
                '<input type="hidden" name="export" value="download">'
                '<input type="hidden" name="confirm" value="t">'
                '<input type="hidden" name="uuid" value="1234-abcd"></form></body></html>'
            ).encode()
            self._reply(h, 200, page, Content_Type="text/html; charset=utf-8")
            return
        start = 0
        rng = h.headers.get("Range")
        if rng and mode != "ignore_range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
        if start >= len(data) and start:
            self._reply(h, 416, b"", Content_Range=f"bytes */{len(data)}")
            return
        body = data[start:]
        if start:
            headers = {"Content_Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            status = 206
        else:
            headers, status = {}, 200
        if self.cut_times.get(parsed.path, 0) > 0:
            # Promise the whole body, send half of it, then close the connection.
            self.cut_times[parsed.path] -= 1
            self.requests[-1]["status"] = status
            h.send_response(status)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k.replace("_", "-"), v)
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        self._reply(h, status, body, **headers)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    srv = FileServer()
    yield srv
    srv.close()


def _source(name: str, urls: list[str], **kw) -> Source:
    fields = {
        "description": "test source",
        "kind": "weights",
        "sha256": None,
        "size": None,
        "archive": "none",
        "dest": f"weights/{name}.bin",
        "license": "test",
        "manual": "Ask the authors by email.",
    }
    fields.update(kw)
    return Source(name=name, urls=tuple(urls), **fields)


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".partial" not in p.parts]


# ------------------------------------------------------------------------------ downloads
def test_success_pins_sha256_and_later_downloads_are_verified(server, tmp_path, caplog):
    server.files["/w.bin"] = PAYLOAD
    src = _source("w", [server.url("/w.bin")])
    with caplog.at_level(logging.INFO, logger="stisr.data.fetch"):
        out = fetch("w", tmp_path, sources={"w": src}, progress=False)
    assert out == tmp_path / "weights" / "w.bin"
    assert out.read_bytes() == PAYLOAD
    assert str(out) in caplog.text  # where the output went is logged
    pins = json.loads((tmp_path / "checksums.json").read_text())
    assert pins == {"w": {"sha256": SHA, "size": len(PAYLOAD)}}
    assert list((tmp_path / ".partial").iterdir()) == []

    # Present destination: returned without any request.
    n = len(server.requests)
    assert fetch("w", tmp_path, sources={"w": src}, progress=False) == out
    assert len(server.requests) == n

    # A later download is checked against the pinned sha256.
    out.unlink()
    server.behaviour["/w.bin"] = "wrong"
    with pytest.raises(FetchError, match="sha256 mismatch") as err:
        fetch("w", tmp_path, sources={"w": src}, progress=False)
    assert "pinned" in str(err.value)
    assert not out.exists()
    server.behaviour["/w.bin"] = "ok"
    assert fetch("w", tmp_path, sources={"w": src}, progress=False).read_bytes() == PAYLOAD


def test_custom_pin_file_location(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    pin = tmp_path / "repo" / "pins.json"
    fetch("w", tmp_path / "data", sources={"w": _source("w", [server.url("/w.bin")])},
          pin_file=pin, progress=False)  # fmt: skip
    assert json.loads(pin.read_text())["w"]["sha256"] == SHA
    assert not (tmp_path / "data" / "checksums.json").exists()


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    server.behaviour["/w.bin"] = "wrong"
    src = _source("w", [server.url("/w.bin")], sha256=SHA)
    with pytest.raises(FetchError) as err:
        fetch("w", tmp_path, sources={"w": src}, progress=False)
    msg = str(err.value)
    assert "sha256" in msg and SHA in msg and server.url("/w.bin") in msg
    assert err.value.source == "w"
    assert not (tmp_path / "weights" / "w.bin").exists()
    assert list((tmp_path / ".partial").iterdir()) == []  # mismatching bytes are deleted
    assert not (tmp_path / "checksums.json").exists()  # nothing pinned from a failure
    server.behaviour["/w.bin"] = "ok"  # the corruption was in transit: a rerun completes
    assert fetch("w", tmp_path, sources={"w": src}, progress=False).read_bytes() == PAYLOAD


def test_registry_md5_is_checked(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    bad = _source("w", [server.url("/w.bin")], md5="0" * 32)
    with pytest.raises(FetchError, match="md5 mismatch"):
        fetch("w", tmp_path, sources={"w": bad}, progress=False)
    good = _source("w", [server.url("/w.bin")], md5=hashlib.md5(PAYLOAD).hexdigest())
    assert fetch("w", tmp_path, sources={"w": good}, progress=False).read_bytes() == PAYLOAD


def test_truncated_transfer_then_rerun_resumes_with_range(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    server.cut_times["/w.bin"] = 1
    src = _source("w", [server.url("/w.bin")], sha256=SHA)
    with pytest.raises(FetchError, match="truncated transfer"):
        fetch("w", tmp_path, sources={"w": src}, progress=False)
    dest = tmp_path / "weights" / "w.bin"
    assert not dest.exists()
    part = tmp_path / ".partial" / "w.part"
    half = part.stat().st_size
    assert 0 < half < len(PAYLOAD)

    assert fetch("w", tmp_path, sources={"w": src}, progress=False).read_bytes() == PAYLOAD
    last = server.requests[-1]
    assert last["headers"].get("Range") == f"bytes={half}-"
    assert last["status"] == 206
    assert not part.exists()


def test_staging_outside_the_data_root_leaves_nothing_partial_under_data(server, tmp_path):
    """`stisr fetch` stages in .downloads/: an interrupted transfer leaves no file under data/."""
    server.files["/w.bin"] = PAYLOAD
    server.cut_times["/w.bin"] = 1
    src = _source("w", [server.url("/w.bin")], sha256=SHA)
    data, staging = tmp_path / "data" / "official", tmp_path / ".downloads"
    kw = dict(sources={"w": src}, partial_dir=staging, progress=False)
    with pytest.raises(FetchError, match="truncated transfer"):
        fetch("w", data, **kw)
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert (staging / "w.part").stat().st_size > 0
    assert fetch("w", data, **kw).read_bytes() == PAYLOAD
    assert server.requests[-1]["status"] == 206 and not (staging / "w.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    server.cut_times["/w.bin"] = 1
    server.behaviour["/w.bin"] = "ignore_range"
    src = _source("w", [server.url("/w.bin")])
    with pytest.raises(FetchError, match="truncated"):
        fetch("w", tmp_path, sources={"w": src}, progress=False)
    out = fetch("w", tmp_path, sources={"w": src}, progress=False)
    assert server.requests[-1]["headers"].get("Range")  # it asked to resume ...
    assert server.requests[-1]["status"] == 200  # ... got the whole file, and restarted
    assert out.read_bytes() == PAYLOAD  # not half + whole
    assert json.loads((tmp_path / "checksums.json").read_text())["w"]["size"] == len(PAYLOAD)


def test_complete_partial_is_not_downloaded_again(server, tmp_path):
    """A finished download whose install was interrupted is reused (416 on resume)."""
    server.files["/w.bin"] = PAYLOAD
    url = server.url("/w.bin")
    part = tmp_path / ".partial" / "w.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)
    (tmp_path / ".partial" / "w.part.json").write_text(json.dumps({"url": url}))
    out = fetch("w", tmp_path, sources={"w": _source("w", [url])}, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert [r["status"] for r in server.requests] == [416]


def test_http_500_names_url_and_status(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    server.behaviour["/w.bin"] = "500"
    url = server.url("/w.bin")
    with pytest.raises(FetchError) as err:
        fetch("w", tmp_path, sources={"w": _source("w", [url])}, progress=False)
    assert url in str(err.value) and "500" in str(err.value)
    assert err.value.url == url
    assert _leftovers(tmp_path) == []


def test_falls_back_to_the_next_url(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.files["/b.bin"] = PAYLOAD
    server.behaviour["/a.bin"] = "500"
    src = _source("w", [server.url("/a.bin"), server.url("/b.bin")])
    assert fetch("w", tmp_path, sources={"w": src}, progress=False).read_bytes() == PAYLOAD
    assert [r["path"] for r in server.requests] == ["/a.bin", "/b.bin"]


def test_html_instead_of_file_is_refused(server, tmp_path):
    server.files["/page"] = b"<html>login</html>"
    server.behaviour["/page"] = "gdrive"  # answers with an HTML page
    with pytest.raises(FetchError, match="HTML page"):
        fetch("w", tmp_path, sources={"w": _source("w", [server.url("/page")])}, progress=False)
    assert not (tmp_path / "checksums.json").exists()


def test_write_error_leaves_nothing_at_dest_and_rerun_completes(server, tmp_path, monkeypatch):
    server.files["/w.bin"] = PAYLOAD
    src = _source("w", [server.url("/w.bin")], sha256=SHA)

    def disk_full(fh, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(transfer, "_write_chunk", disk_full)
        with pytest.raises(FetchError, match="No space left on device") as err:
            fetch("w", tmp_path, sources={"w": src}, progress=False)
    assert err.value.url == server.url("/w.bin")
    assert not (tmp_path / "weights").exists()
    assert fetch("w", tmp_path, sources={"w": src}, progress=False).read_bytes() == PAYLOAD


def test_disk_full_mid_transfer_keeps_a_resumable_prefix_only(server, tmp_path, monkeypatch):
    """ENOSPC after some chunks: dest untouched, the staged prefix resumes once space is free."""
    server.files["/w.bin"] = PAYLOAD
    src = _source("w", [server.url("/w.bin")], sha256=SHA)
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 64 << 10)
    real_write, calls = transfer._write_chunk, {"n": 0}

    def fills_up(fh, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fh, data)

    with monkeypatch.context() as m:
        m.setattr(transfer, "_write_chunk", fills_up)
        with pytest.raises(FetchError, match=r"cannot write .*w\.part: No space left"):
            fetch("w", tmp_path, sources={"w": src}, progress=False)
    assert not (tmp_path / "weights").exists() and _leftovers(tmp_path) == []
    staged = (tmp_path / ".partial" / "w.part").read_bytes()
    assert len(staged) == 2 * (64 << 10) and PAYLOAD.startswith(staged)

    assert fetch("w", tmp_path, sources={"w": src}, progress=False).read_bytes() == PAYLOAD
    assert server.requests[-1]["headers"].get("Range") == f"bytes={len(staged)}-"
    assert list((tmp_path / ".partial").iterdir()) == []


# ------------------------------------------------------------------------------- archives
def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_is_extracted_atomically(server, tmp_path):
    server.files["/eval.zip"] = _zip({"eval/IC13_857/data.mdb": b"x" * 10, "README": b"r"})
    src = _source("ev", [server.url("/eval.zip")], archive="zip", dest="str/eval", kind="dataset")
    out = fetch("ev", tmp_path, sources={"ev": src}, progress=False)
    assert out == tmp_path / "str" / "eval"
    assert (out / "eval" / "IC13_857" / "data.mdb").read_bytes() == b"x" * 10
    assert sorted(p.name for p in (tmp_path / "str").iterdir()) == ["eval"]  # no temp dirs
    assert list((tmp_path / ".partial").iterdir()) == []  # archive removed after install


def test_tar_gz_is_extracted(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("mnt/1/a.jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    server.files["/mj.tar.gz"] = buf.getvalue()
    src = _source("mj", [server.url("/mj.tar.gz")], archive="tar.gz", dest="mjsynth")
    out = fetch("mj", tmp_path, sources={"mj": src}, progress=False)
    assert (out / "mnt" / "1" / "a.jpg").read_bytes() == b"abc"


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_zip_with_path_traversal_is_rejected(server, tmp_path, member):
    server.files["/bad.zip"] = _zip({"good.txt": b"g", member: b"evil"})
    root = tmp_path / "root"
    src = _source("bad", [server.url("/bad.zip")], archive="zip", dest="str/bad")
    with pytest.raises(FetchError, match="unsafe member"):
        fetch("bad", root, sources={"bad": src}, progress=False)
    assert not (root / "str" / "bad").exists()
    assert list((root / "str").iterdir()) == []  # the temporary extraction dir is gone
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    assert list((root / ".partial").iterdir()) == []


def test_declared_zip_that_is_not_a_zip(server, tmp_path):
    server.files["/w.bin"] = PAYLOAD
    src = _source("w", [server.url("/w.bin")], archive="zip", dest="weights/w")
    with pytest.raises(FetchError, match="bad zip archive"):
        fetch("w", tmp_path, sources={"w": src}, progress=False)
    assert not (tmp_path / "weights" / "w").exists()


# ---------------------------------------------------------------------------- Google Drive
def test_gdrive_confirmation_page_is_followed(server, tmp_path, monkeypatch):
    server.files["/download"] = PAYLOAD
    server.behaviour["/download"] = "gdrive"
    monkeypatch.setattr(source_registry, "GDRIVE_DOWNLOAD_URL", server.url("/download"))
    src = _source("g", ["gdrive://FILE_id-1"])
    out = fetch("g", tmp_path, sources={"g": src}, progress=False)
    assert out.read_bytes() == PAYLOAD
    first, second = server.requests
    assert first["query"] == {"id": "FILE_id-1", "export": "download", "confirm": "t"}
    assert second["query"]["uuid"] == "1234-abcd" and second["query"]["id"] == "FILE_id-1"


def test_gdrive_folder_needs_manual_download(tmp_path):
    src = _source("f", ["gdrive-folder://abcDEF"], manual="Download the folder by hand.")
    with pytest.raises(FetchError, match="Download the folder by hand") as err:
        fetch("f", tmp_path, sources={"f": src}, progress=False)
    assert err.value.url == "gdrive-folder://abcDEF"
    assert not (tmp_path / "weights").exists()


def test_unknown_source_lists_known_ones(tmp_path):
    with pytest.raises(FetchError, match="known sources: .*crnn"):
        fetch("nope", tmp_path, progress=False)


# -------------------------------------------------------------------------------- registry
def test_shipped_registry_loads_every_entry():
    sources = load_sources()
    expected = {
        "textzoom", "str_eval", "str_lmdb_clovaai", "lemma_datasets", "lemma_weights",
        "kdltr_textzoom_ic15", "kdltr_ic13", "kdltr_cute80", "kdltr_svt", "kdltr_svtp",
        "mjsynth", "synthtext", "str_fewer_labels",
        "crnn", "aster", "moran", "abinet", "matrn", "parseq", "tp_transformer",
    }  # fmt: skip
    assert expected <= set(sources)
    for src in sources.values():
        assert src.kind in ("dataset", "weights")
        assert not Path(src.dest).is_absolute() and ".." not in Path(src.dest).parts
        assert src.download_urls or src.manual
    assert sources["textzoom"].download_urls == ()  # a Drive folder: manual only
    assert sources["parseq"].urls[0].endswith("/v1.0.0/parseq-bb5792a6.pt")
    assert sources["crnn"].dest == "weights/crnn.pth"


def _write_registry(path: Path, **override) -> Path:
    entry = {
        "name": "thing",
        "description": "d",
        "kind": "dataset",
        "urls": ["https://example.org/x.zip"],
        "sha256": None,
        "size": None,
        "archive": "zip",
        "dest": "things/x",
        "license": "l",
        "manual": "m",
    }
    entry.update(override)
    entry = {k: v for k, v in entry.items() if v != "<drop>"}
    path.write_text(yaml.safe_dump({"version": 1, "sources": [entry]}))
    return path


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"archive": "rar"}, "archive"),
        ({"kind": "model"}, "kind"),
        ({"dest": "<drop>"}, "dest"),
        ({"dest": "../escape"}, "dest"),
        ({"sha256": "abc"}, "sha256"),
        ({"size": -3}, "size"),
        ({"urls": ["ftp://x/y"]}, "urls"),
        ({"urls": []}, "urls"),
        ({"mirror": "x"}, "mirror"),
        ({"urls": ["gdrive-folder://abc"], "manual": "<drop>"}, "manual"),
    ],
)
def test_bad_registry_entry_names_entry_and_key(tmp_path, override, key):
    path = _write_registry(tmp_path / "s.yaml", **override)
    with pytest.raises(SourceError) as err:
        load_sources(path)
    assert "'thing'" in str(err.value) and f"'{key}'" in str(err.value)


def test_registry_duplicate_and_overlapping_dest(tmp_path):
    path = _write_registry(tmp_path / "s.yaml")
    doc = yaml.safe_load(path.read_text())
    doc["sources"].append(dict(doc["sources"][0], name="other", dest="things/x/inner"))
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SourceError, match="'other'.*'dest'"):
        load_sources(path)
    assert load_sources(_write_registry(tmp_path / "ok.yaml"))["thing"].archive == "zip"


def test_registry_imports_no_downloader():
    """The planner and Snakefile read the registry; that must not load HTTP or progress bars."""
    code = (
        "import sys, stisr.data.source_registry as r; r.load_sources(); "
        "print(sorted(m for m in ('tqdm', 'urllib.request', 'http.client', 'stisr.data.fetch') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
