"""loyalty_http -- loyalty-svc's HTTP listener for /metrics and /healthz, with
the policy and limits of the C services' listener (common/httpd.c,
common/http_conn.c; docs/OBSERVABILITY.md "Security", docs/SECURITY.md
"Bounded connections"), from Python's standard library alone.

Policy (check_url, before anything listens; a refusal is a usage error, exit 2):
  - http:// on a loopback address (127.0.0.0/8, ::1, localhost) with a
    port; https:// is refused (no certificate options here) and so is any
    address other hosts can reach: there is no token, as on the C services,
    so loopback is the only exposure;
  - a host *name* must resolve to exactly one address (localhost is
    127.0.0.1 and ::1 on a stock Debian: a client would find nothing on the
    other).

Every request (what http_conn.c and httpd.c do, in the same order):
  - a request header (request line and headers) must arrive whole within
    HEADER_TIMEOUT_S of the connection, or of its first byte on a kept-alive
    connection, and be at most HEADER_MAX bytes (431 beyond), at most
    HEADERS_MAX lines (431); else the connection is closed;
  - a kept-alive connection waits at most IDLE_TIMEOUT_S for its next
    request, and a client must take a response within it too;
  - only GET and HEAD (405 with "Allow: GET, HEAD"); a body is refused (400);
    a malformed request line or header line is 400; all of these close;
  - a Host header naming anything but an IP literal, localhost or the
    configured host is refused (403): DNS rebinding;
  - an unknown path is 404; every refusal is JSON {"error": ..., "status": N}.
  - at most MAX_CONNS connections: one more closes the connection that has
    waited longest for a request; one whose request is being answered is
    never closed, and when all are, the new one is closed at once.

http.server's request parser is not used: it bounds a line, not the whole
header nor the time it takes, and answers its refusals in HTML. The server
is http.server.ThreadingHTTPServer: one thread per connection, so the cap
bounds the threads too.

Threads: accept runs on the server's thread, each connection on its own;
route functions run on the connection's thread and must not touch the
participant's SQLite connection (see loyalty.py: they read the metrics'
copy and open a read-only connection of their own).
"""

import http
import http.server
import ipaddress
import json
import socket
import socketserver
import threading
import time
import urllib.parse

HEADER_MAX = 8192  # bytes of request line and headers (HTTP_HEADER_MAX)
HEADERS_MAX = 64  # header lines (HTTP_HEADERS_MAX)
MAX_CONNS = 64  # HTTP_MAX_CONNS
HEADER_TIMEOUT_S = 10.0  # HTTP_HEADER_TIMEOUT
IDLE_TIMEOUT_S = 60.0  # HTTP_IDLE_TIMEOUT
RECV_CHUNK = 4096


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check_url(what, url):
    """The listen address (family, host, port) of url, or ValueError naming what to write
    (the messages of httpd_check_url and sec_check_listen_host)."""
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port
    except ValueError:
        u, port = None, None
    if u is None or u.scheme not in ("http", "https") or not url.startswith(u.scheme + "://"):
        raise ValueError('%s: "%s" is not an http:// or https:// URL' % (what, url))
    if port is None:
        raise ValueError("%s: %s needs a port (http://127.0.0.1:9464)" % (what, url))
    if u.scheme == "https":
        raise ValueError("%s: %s is https:// but no certificate and key are configured" % (what, url))
    host = u.hostname or ""
    if not host or not _is_loopback(host):
        raise ValueError("%s: refusing to serve %s, which other hosts can reach, without TLS and a token: "
                         "use https:// with a certificate and an admin token, or a loopback address "
                         "(http://127.0.0.1:PORT) (see docs/OBSERVABILITY.md)" % (what, url))
    if _is_ip_literal(host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, host, port
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError("%s: cannot listen on %s: host %s does not resolve (%s)" % (what, url, host, e.strerror))
    addrs = []
    for family, _, _, _, sa in infos:
        if sa[0] not in [a for _, a in addrs]:
            addrs.append((family, sa[0]))
    if len(addrs) > 1:
        def with_host(a):
            return "%s://%s:%d%s" % (u.scheme, "[%s]" % a if ":" in a else a, port, u.path)
        raise ValueError("%s: %s names host %s, which resolves to several addresses (%s), but a listener "
                         "takes only one: write the address itself, e.g. %s or %s"
                         % (what, url, host, ", ".join(a for _, a in addrs), with_host(addrs[0][1]),
                            with_host(addrs[1][1])))
    return addrs[0][0], addrs[0][1], port


def error_body(status, message):
    """ju_error_line's document: {"error":...,"status":N} and a newline."""
    return (json.dumps({"error": message, "status": status}, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode()


class _Refusal(Exception):
    def __init__(self, status, message, extra=""):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


class _Conn:
    """A connection's entry in the server's table (under the server's lock)."""

    __slots__ = ("sock", "waiting_since", "taken_at", "evicted")

    def __init__(self, sock):
        self.sock = sock
        self.waiting_since = time.monotonic()  # None while its request is answered
        self.taken_at = self.waiting_since  # when its latest request was taken up
        self.evicted = False


class _Handler:
    """One connection: requests read, checked and answered in turn until it closes."""

    def __init__(self, request, client_address, server):
        self.sock, self.server = request, server
        self.buf = bytearray()
        self.conn = server.conn_of(request)
        try:
            self.serve()
        except OSError:
            pass  # the peer went away, a timeout, or the server closed it (eviction, stop)
        finally:
            server.conn_removed(self.conn)

    def serve(self):
        deadline = time.monotonic() + HEADER_TIMEOUT_S  # the first request: from the connection
        while True:
            head = self.read_head(deadline)
            if head is None:
                return
            if not self.server.conn_busy(self.conn):
                return  # evicted meanwhile
            keep_alive = self.answer(head)
            if not keep_alive:
                return
            if not self.server.conn_waiting(self.conn):
                return
            deadline = None  # a later request: IDLE_TIMEOUT_S for its first byte, then HEADER_TIMEOUT_S

    def recv_until(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(RECV_CHUNK)
        except socket.timeout:
            return b""  # closed without an answer, as http_conn does

    def read_head(self, deadline):
        """The next request header up to its blank line, or None: closed, timed out, refused."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0 and end + 4 <= HEADER_MAX:
                head = bytes(self.buf[:end + 4])
                del self.buf[:end + 4]
                return head
            if end >= 0 or len(self.buf) >= HEADER_MAX:
                self.refuse(431, "request header larger than 8 KiB")
                return None
            if deadline is None:
                if self.buf:
                    deadline = time.monotonic() + HEADER_TIMEOUT_S
                else:  # kept alive, waiting for the next request
                    data = self.recv_until(time.monotonic() + IDLE_TIMEOUT_S)
                    if not data:
                        return None
                    self.buf += data
                    deadline = time.monotonic() + HEADER_TIMEOUT_S
                    continue
            data = self.recv_until(deadline)
            if not data:
                return None
            self.buf += data

    def answer(self, head):
        """Answers one request; whether the connection stays open."""
        try:
            method, target, headers, keep_alive = self.parse(head)
        except _Refusal as r:
            self.refuse(r.status, r.message, r.extra)
            return False
        is_head = method == "HEAD"
        if not self.server.host_allowed(headers.get("host")):
            self.respond(403, "application/json", error_body(403, "host not allowed"), keep_alive, is_head)
            return keep_alive
        fn = self.server.routes.get(target.split("?", 1)[0])
        if fn is None:
            self.respond(404, "application/json", error_body(404, "not found"), keep_alive, is_head)
            return keep_alive
        try:
            status, content_type, body = fn()
        except Exception as e:  # a route's defect answers 500 and is logged, the listener keeps serving
            self.server.log("WARN", "HTTP %s: %s" % (target.split("?", 1)[0], e))
            status, content_type, body = 500, "application/json", error_body(500, "internal error")
        self.respond(status, content_type, body, keep_alive, is_head)
        return keep_alive

    @staticmethod
    def parse(head):
        """(method, target, headers by lower-case name, keep_alive), or _Refusal (parse_request)."""
        lines = head[:-4].decode("latin-1").split("\r\n")
        words = lines[0].split(" ")
        if len(words) < 3 or not " ".join(words[2:]).startswith("HTTP/1.") or not words[1].startswith("/"):
            raise _Refusal(400, "malformed request line")
        method, target, version = words[0], words[1], " ".join(words[2:])
        keep_alive = version == "HTTP/1.1"
        headers = {}
        for n, line in enumerate(lines[1:]):
            colon = line.find(":")
            if colon <= 0:
                raise _Refusal(400, "malformed header line")
            if n == HEADERS_MAX:
                raise _Refusal(431, "too many header lines")
            headers.setdefault(line[:colon].lower(), line[colon + 1:].strip(" \t"))
        if headers.get("connection", "").lower() == "close":
            keep_alive = False
        if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
            raise _Refusal(400, "a request body is not accepted")
        if method not in ("GET", "HEAD"):
            raise _Refusal(405, "only GET and HEAD are served", "Allow: GET, HEAD\r\n")
        return method, target, headers, keep_alive

    def refuse(self, status, message, extra=""):
        """A refusal of the transport: JSON, then the connection closes (respond_refusal)."""
        self.respond(status, "application/json", error_body(status, message), False, False, extra)

    def respond(self, status, content_type, body, keep_alive, is_head, extra=""):
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        head = ("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: %s\r\n"
                "Content-Type: %s\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
                "Referrer-Policy: no-referrer\r\n%s\r\n"
                % (status, phrase, len(body), "keep-alive" if keep_alive else "close", content_type, extra))
        self.sock.settimeout(IDLE_TIMEOUT_S)  # the client must take it within the idle timeout
        self.sock.sendall(head.encode("latin-1") + (b"" if is_head else body))


class Server(http.server.ThreadingHTTPServer):
    """The listener: routes maps a path to fn() -> (status, content_type, body bytes)."""

    daemon_threads = True
    request_queue_size = MAX_CONNS

    def __init__(self, family, host, port, routes, log):
        self.address_family = family
        self.routes, self.log = routes, log
        self.configured_host = host
        self._lock = threading.Lock()
        self._conns = []  # _Conn, oldest first
        self._thread = None
        super().__init__((host, port), _Handler)

    def server_bind(self):
        # HTTPServer.server_bind would look up the host's FQDN (a DNS query) for nothing.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]

    @property
    def port(self):
        return self.server_address[1]

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-http", daemon=True)
        self._thread.start()

    def close(self):
        """Stops accepting, closes every connection, and returns."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        with self._lock:
            for c in self._conns:
                c.evicted = True
                _shut(c.sock)
        self.server_close()

    # -- the connection table (the cap) --

    def process_request(self, request, client_address):
        # On the accepting thread, in accept order: make room, and enter the connection in the
        # table before its thread starts, so that the next accept already counts it.
        with self._lock:
            live = [c for c in self._conns if not c.evicted]
            if len(live) >= MAX_CONNS:
                idle = [c for c in live if c.waiting_since is not None]
                if not idle:
                    self.shutdown_request(request)  # every connection is being answered
                    return
                oldest = min(idle, key=lambda c: c.waiting_since)
                oldest.evicted = True
                _shut(oldest.sock)
            self._conns.append(_Conn(request))
        super().process_request(request, client_address)

    def conn_of(self, sock):
        with self._lock:
            return next(c for c in self._conns if c.sock is sock)

    def conn_removed(self, c):
        with self._lock:
            if c in self._conns:
                self._conns.remove(c)

    def conn_busy(self, c):
        """Its request is being answered: never evicted. False when it was already."""
        with self._lock:
            if c.evicted:
                return False
            c.waiting_since = None
            c.taken_at = time.monotonic()
            return True

    def conn_waiting(self, c):
        with self._lock:
            if c.evicted:
                return False
            # Idle since its request was taken up, not since this thread got
            # here: a client reads the answer before that, and under load the
            # threads of two connections answered in turn can get here in the
            # other order, which would evict the wrong one.
            c.waiting_since = c.taken_at
            return True

    def connections(self):
        with self._lock:
            return sum(1 for c in self._conns if not c.evicted)

    # -- requests --

    def host_allowed(self, host_header):
        """httpd.c's host_allowed: the DNS rebinding defence."""
        if not host_header:
            return True  # HTTP/1.0 without Host: no name was resolved
        if host_header.startswith("["):
            end = host_header.find("]")
            if end < 0:
                return False
            try:
                return isinstance(ipaddress.ip_address(host_header[1:end]), ipaddress.IPv6Address)
            except ValueError:
                return False
        host = host_header.split(":", 1)[0]
        try:
            socket.inet_pton(socket.AF_INET, host)
            return True
        except OSError:
            pass
        return host.lower() == "localhost" or (self.configured_host != "" and
                                               host.lower() == self.configured_host.lower())

    def handle_error(self, request, client_address):
        self.log("WARN", "HTTP connection failed unexpectedly")


def _shut(sock):
    """Wakes the connection's thread (its recv returns) without closing the descriptor under it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
