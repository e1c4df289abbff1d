"""A GCE metadata server for one VM, as a TPU VM's answers (tests/tpu_slice.rs): GET
/computeMetadata/v1/instance/<key> answers the file STATE_DIR/<key> (404 when there is none),
only with `Metadata-Flavor: Google` (403 without, as Google's server). `?wait_for_change=true`
holds the request until the file's content differs from `last_etag` (or `timeout_sec` passes),
so a test flips `preempted` by writing the file and a long-polling worker hears it at once.

usage: metadata.py STATE_DIR   (prints the port it listens on, on 127.0.0.1, then serves)
"""
import hashlib
import http.server
import socketserver
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = "/computeMetadata/v1/instance/"
STATE = Path(sys.argv[1])


def read(key):
    path = STATE / key
    return path.read_text() if path.is_file() else None


def etag(value):
    return hashlib.sha256((value or "").encode()).hexdigest()[:16]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=""):
        data = body.encode()
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(data)))
        if status == 200:
            self.send_header("ETag", etag(body))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.answer(403, "Missing Metadata-Flavor:Google header.")
        url = urllib.parse.urlparse(self.path)
        if not url.path.startswith(ROOT):
            return self.answer(404)
        key = url.path[len(ROOT):]
        query = urllib.parse.parse_qs(url.query)
        value = read(key)
        if query.get("wait_for_change") == ["true"]:
            last = query.get("last_etag", [""])[0]
            deadline = time.time() + float(query.get("timeout_sec", ["60"])[0])
            while etag(value) == last and time.time() < deadline:
                time.sleep(0.05)
                value = read(key)
        if value is None:
            return self.answer(404)
        self.answer(200, value)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
