"""A tiny stand-in for the Hugging Face Hub's file-download HTTP API, for tests (no network needed).

Enough of the API for ``huggingface_hub.hf_hub_download`` / ``get_hf_file_metadata`` (huggingface_hub 2.4.0) with
``endpoint=hub.url`` (or ``HF_ENDPOINT=hub.url``):

* ``HEAD|GET /{repo_id}/resolve/{revision}/{filename}`` (``datasets/`` / ``spaces/`` prefixes for other repo types).
  LFS files answer ``302`` to a second "CDN" port (a different origin, as on the real Hub, so the client stops there
  and reads ``X-Repo-Commit``, ``X-Linked-Etag`` = sha256 and ``X-Linked-Size`` from the redirect). Non-LFS files
  answer ``200`` with ``ETag`` = git blob sha1.
* Unknown repo: ``401`` + ``X-Error-Code: RepoNotFound``; unknown file: ``404`` + ``EntryNotFound``; unknown revision:
  ``404`` + ``RevisionNotFound`` (what the real Hub sends to anonymous clients).
* File bodies honour ``Range: bytes=N-`` / ``bytes=N-M`` with ``206`` + ``Content-Range``.

Controls (thread-safe attributes, set them from the test): ``mode`` = ``"ok"`` | ``"503"`` (every request answered
503) | ``"drop"`` (connection closed without an answer); ``corrupt`` = serve wrong bytes of the right length;
``cut_after`` = bytes of the next body sent before the connection is closed, ``cut_times`` how many bodies are cut,
``after_cut`` = mode switched to once the last cut happened (e.g. ``"503"``: the server dies mid-download);
``hold`` = a ``threading.Event`` the server waits for (up to 10 s) after sending a body's headers (a slow download).
``requests`` records every request. Use as a context manager::

    with HubStandIn() as hub:
        sha = hub.add_file("owner/repo", "w.pt", data)
        hf_hub_download("owner/repo", "w.pt", endpoint=hub.url, cache_dir=tmp)
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import unquote, urlsplit

COMMIT = "5f1d1a6c9b0e2f3a4d5c6b7a8e9f0a1b2c3d4e5f"
_PREFIX = {"datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class Request:
    """One request as the stand-in saw it."""

    role: str  # "hub" or "cdn"
    method: str
    path: str
    range: Optional[str]


@dataclass(frozen=True)
class _File:
    content: bytes
    lfs: bool
    sha256: str
    advertised_sha256: str
    git_sha1: str


class HubStandIn:
    """Threaded HTTP server on 127.0.0.1 (random free ports) imitating the Hub; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], dict[str, _File]] = {}
        self.requests: list[Request] = []
        self.mode = "ok"
        self.corrupt = False
        self.cut_after: Optional[int] = None
        self.cut_times = 1
        self.after_cut = "ok"
        self.hold: Optional[threading.Event] = None
        self._servers: list[ThreadingHTTPServer] = []

    # -- lifecycle
    def start(self) -> "HubStandIn":
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.stand_in = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            server.handle_error = lambda request, address: None  # type: ignore[method-assign]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> "HubStandIn":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to pass as ``endpoint=`` / ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    # -- content
    def add_file(self, repo_id: str, filename: str, content: bytes, *, repo_type: str = "model", lfs: bool = True,
                 advertised_sha256: Optional[str] = None) -> str:
        """Serve ``content``; returns its sha256. ``advertised_sha256`` makes the server claim another hash."""
        sha = hashlib.sha256(content).hexdigest()
        git = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        with self._lock:
            self._repos.setdefault((repo_type, repo_id), {})[filename] = _File(
                content, lfs, sha, advertised_sha256 or sha, git)
        return sha

    def add_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        """An existing but empty repo (its files answer 404 EntryNotFound)."""
        with self._lock:
            self._repos.setdefault((repo_type, repo_id), {})

    def body_requests(self, *, method: str = "GET") -> list[Request]:
        """Requests that transfer a file body (CDN GETs and non-LFS resolve GETs)."""
        with self._lock:
            return [r for r in self.requests if r.method == method and (r.role == "cdn" or "/resolve/" in r.path)]

    def _lookup(self, repo_type: str, repo_id: str) -> Optional[dict[str, _File]]:
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def _blob(self, sha: str) -> Optional[_File]:
        with self._lock:
            for files in self._repos.values():
                for f in files.values():
                    if f.sha256 == sha:
                        return f
        return None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_cut(self) -> Optional[int]:
        """Bytes to send before cutting this body, or ``None``; switches ``mode`` after the last cut."""
        with self._lock:
            if self.cut_after is None or self.cut_times <= 0:
                return None
            self.cut_times -= 1
            if self.cut_times == 0:
                self.mode = self.after_cut
            return self.cut_after


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    @property
    def hub(self) -> HubStandIn:
        return self.server.stand_in  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _reply(self, code: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(code)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self, *, head: bool) -> None:
        role = self.server.role  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        self.hub._record(Request(role, self.command, path, self.headers.get("Range")))
        mode = self.hub.mode
        if mode == "drop":
            self.close_connection = True
            return
        if mode == "503":
            self._reply(503, {"Connection": "close"}, b"Service Unavailable")
            self.close_connection = True
            return
        if role == "cdn":
            blob = self.hub._blob(path.rsplit("/", 1)[-1])
            if blob is None:
                self._reply(404, {}, b"no such blob")
            else:
                self._send_body(blob, {"ETag": f'"{blob.sha256}"'}, head)
            return
        self._resolve(path, head)

    def _resolve(self, path: str, head: bool) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        repo_type = "model"
        if parts and parts[0] in _PREFIX:
            repo_type = _PREFIX[parts.pop(0)]
        if len(parts) < 5 or parts[2] != "resolve":
            self._reply(404, {}, b"unknown route")
            return
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        files = self.hub._lookup(repo_type, repo_id)
        if files is None:
            self._reply(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"{}")
            return
        if revision not in ("main", COMMIT):
            self._reply(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b"{}")
            return
        f = files.get(filename)
        if f is None:
            self._reply(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                              "X-Repo-Commit": COMMIT}, b"{}")
            return
        common = {"X-Repo-Commit": COMMIT}
        if f.lfs:
            self._reply(302, {**common, "Location": f"{self.hub.cdn_url}/blobs/{f.sha256}",
                              "ETag": f'"{f.git_sha1}"', "X-Linked-Etag": f'"{f.advertised_sha256}"',
                              "X-Linked-Size": str(len(f.content))})
        else:
            self._send_body(f, {**common, "ETag": f'"{f.git_sha1}"'}, head)

    def _send_body(self, f: _File, headers: dict[str, str], head: bool) -> None:
        data = bytes(b ^ 0x5A for b in f.content) if self.hub.corrupt else f.content
        total, start, end, code = len(data), 0, len(data) - 1, 200
        requested = self.headers.get("Range")
        if requested and requested.startswith("bytes="):
            first, _, last = requested[len("bytes="):].partition("-")
            start, end, code = int(first or 0), int(last) if last else total - 1, 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{total}"}
        body = data[start:end + 1]
        self.send_response(code)
        for key, value in {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes"}.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        hold = self.hub.hold
        if hold is not None:
            hold.wait(10)
        cut = self.hub._take_cut()
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # the client sees a body shorter than Content-Length
            return
        self.wfile.write(body)
