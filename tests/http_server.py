"""A throw-away HTTP server on 127.0.0.1 for download tests: nothing leaves the machine."""

import contextlib
import functools
import http.server
import socket
import threading


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files like ``python -m http.server`` without logging every request."""

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_directory(folder):
    """Serve ``folder`` on 127.0.0.1 at a free port (port 0) in a thread; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with _serving(handler) as url:
        yield url


@contextlib.contextmanager
def _serving(handler):
    """Run ``handler`` on 127.0.0.1 at a free port (port 0) in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a handler still busy does not hold up the shutdown
    # shutdown() waits for the loop's next poll: 0.5 s by default, a pause on every test
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: bind port 0, note the port, release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def serve_not_http():
    """A server on 127.0.0.1 that answers every request with an SSH banner, not HTTP:
    urllib raises http.client.BadStatusLine, which is not an OSError."""

    class NotHttp(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
            self.close_connection = True

        def log_message(self, *args):
            pass

    with _serving(NotHttp) as url:
        yield url


@contextlib.contextmanager
def serve_stalled_download(size=1 << 20):
    """A server on 127.0.0.1 whose every file announces ``size`` bytes, sends the first
    4 KiB and then stalls until the block exits: a download caught half-way."""
    release = threading.Event()

    class Stalled(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(b"\0" * 4096)
            self.wfile.flush()
            release.wait(60)

        def log_message(self, *args):
            pass

    try:
        with _serving(Stalled) as url:
            yield url
    finally:
        release.set()


@contextlib.contextmanager
def serve_odd_responses(kind):
    """A server on 127.0.0.1 that answers every file in one odd way: "cut" announces 1 MiB
    and closes after 4 KiB; "endless" streams zeros with no Content-Length; "loop"
    redirects to itself."""

    class Odd(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if kind == "loop":
                self.send_response(302)
                self.send_header("Location", self.path)
                self.end_headers()
                return
            self.send_response(200)
            if kind == "cut":
                self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                for _ in range(1 if kind == "cut" else 1 << 20):
                    self.wfile.write(b"\0" * 4096)
            except OSError:  # the client stopped reading
                pass
            self.close_connection = True

        def log_message(self, *args):
            pass

    with _serving(Odd) as url:
        yield url
