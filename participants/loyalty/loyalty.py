#!/usr/bin/python3
"""loyalty-svc -- the loyalty participant, written in Python from
proto/saga.proto and docs/PARTICIPANTS.md alone (no code of the C runtime):
awards points for an order ("award") and takes them back when the saga is
undone ("revoke").

Layers, top to bottom:
  Nng        Debian's libnng through ctypes: one rep0 socket, served one
             message at a time on the main thread (SQLite serialises the
             writes anyway).
  Store      the participant's own SQLite file: the business tables and the
             idempotency records and barrier rows (tables lt_*), written in
             ONE transaction per message, committed before the reply is sent.
  Loyalty    the two handlers: business SQL only, inside the transaction.
  Metrics    with --metrics-url, GET /metrics and /healthz on a loopback HTTP
             listener of its own threads (loyalty_metrics.py, loyalty_http.py):
             the C services' series and rules (docs/OBSERVABILITY.md). The
             serving loop only adds to the counters, once per message, after
             its COMMIT; nothing it does waits for HTTP.

Invariants (saga.proto rules 1-5, docs/PARTICIPANTS.md):
  1. A key's effect, its stored reply and its barrier row commit together or
     not at all; nothing is sent before that commit.
  2. A stored key is answered with its stored reply, replayed = true; with
     another fingerprint (saga_id, step, phase, operation, params) CONFLICT.
     The key is looked up before the operation's name is checked.
  3. Barrier per (saga_id, step): a compensation with no action on record is
     SKIPPED and fences the action; the fenced (late) action is SKIPPED; a
     compensation after a REJECTED or SKIPPED action is SKIPPED.
  4. Any doubt about the database: OUTCOME_RETRY, nothing stored.
  5. A message breaking the wire limits is REJECTED, nothing stored, no key
     echoed. A saga older than the retention runs nothing (rule 9 of
     participant.h): a stored key replays, any other is CONFLICT.
  6. Points are conserved: accounts.points = the sum of the customer's
     awards in state 'awarded' (view points_audit), checked at start.
  7. Only the serving thread uses the participant's SQLite connection; the
     HTTP threads read the metrics' copy and open their own read-only one.
"""

import ctypes
import hashlib
import json
import os
import secrets
import signal
import sqlite3
import stat
import sys
import time
import urllib.parse

import loyalty_http
import loyalty_metrics
import saga_pb2  # generated at build time: protoc --python_out (participants/loyalty/CMakeLists.txt)

VERSION = "0.3.0"
NAME = "loyalty"

# Wire limits (proto/saga.proto).
MAX_MSG = 65536
RECV_SLACK = 4096  # nng's limit counts its SP header: admit a little more, refuse it ourselves
MAX_KEY, MAX_SAGA_ID, MAX_NAME, MAX_PARAMS, MAX_VALUE = 255, 64, 64, 64, 4096
BATCH_MARK, BATCH_MAX = 0x07, 32

OK = saga_pb2.OUTCOME_OK
REJECTED = saga_pb2.OUTCOME_REJECTED
RETRY = saga_pb2.OUTCOME_RETRY
CONFLICT = saga_pb2.OUTCOME_CONFLICT
SKIPPED = saga_pb2.OUTCOME_SKIPPED
ACTION, COMPENSATE = saga_pb2.PHASE_ACTION, saga_pb2.PHASE_COMPENSATE

DEFAULT_RETENTION_S = 7 * 24 * 3600
PURGE_EVERY_S, PURGE_BATCH = 60, 500
MAX_AMOUNT = 1000000000


LOG_JSON = False  # --log-format json
LOG_LINE_MAX = 4096  # as common/log.c: a longer message is cut and marked


def log(level, msg):
    """One line on stderr, in the C programs' format (common/log.c): UTC time
    with ms, level, program, message; with --log-format json one JSON object
    (ts, level, program, msg) that is always valid JSON."""
    now = time.time()
    ts = "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)), int(now * 1000) % 1000)
    msg = str(msg)
    truncated = len(msg) > LOG_LINE_MAX
    if truncated:
        msg = msg[:LOG_LINE_MAX]
    if LOG_JSON:
        line = {"ts": ts, "level": level, "program": "loyalty-svc", "msg": msg}
        if truncated:
            line["truncated"] = True
        # ensure_ascii: lone surrogates (undecodable bytes) are escaped, never raw
        sys.stderr.write(json.dumps(line, ensure_ascii=True) + "\n")
    else:
        sys.stderr.write("%s %-5s loyalty-svc: %s\n" % (ts, level, msg.replace("\n", " ")))
    sys.stderr.flush()


def uuid7():
    """A version 7 UUID (RFC 9562): 48 bits of Unix ms, then random bits."""
    ms = int(time.time() * 1000)
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) & 0xFFF) << 64 | (0x2 << 62) | (rand & ((1 << 62) - 1))
    h = "%032x" % value
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def uuid7_time_ms(text):
    """The start time of a version 7 UUID in ms, or None for any other id."""
    if len(text) != 36 or text[14] != "7" or [text[i] for i in (8, 13, 18, 23)] != ["-"] * 4:
        return None
    try:
        return int(text[:8] + text[9:13], 16)
    except ValueError:
        return None


# ---- nng through ctypes ------------------------------------------------------


class NngError(Exception):
    pass


class Nng:
    """One rep0 socket on Debian's libnng.so.1 (nng 1.5.2)."""

    FLAG_ALLOC = 1
    ETIMEDOUT = 5

    class Socket(ctypes.Structure):
        _fields_ = [("id", ctypes.c_uint32)]

    def __init__(self, url, recv_timeout_ms):
        lib = ctypes.CDLL("libnng.so.1")
        lib.nng_strerror.restype = ctypes.c_char_p
        lib.nng_rep0_open.argtypes = [ctypes.POINTER(Nng.Socket)]
        lib.nng_listen.argtypes = [Nng.Socket, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        lib.nng_socket_set_ms.argtypes = [Nng.Socket, ctypes.c_char_p, ctypes.c_int32]
        lib.nng_socket_set_size.argtypes = [Nng.Socket, ctypes.c_char_p, ctypes.c_size_t]
        lib.nng_recv.argtypes = [Nng.Socket, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int]
        lib.nng_send.argtypes = [Nng.Socket, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.nng_free.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.nng_close.argtypes = [Nng.Socket]
        self.lib = lib
        self.sock = Nng.Socket()
        self._check(lib.nng_rep0_open(ctypes.byref(self.sock)), "open a rep0 socket")
        self._check(lib.nng_socket_set_ms(self.sock, b"recv-timeout", recv_timeout_ms), "set recv-timeout")
        self._check(lib.nng_socket_set_size(self.sock, b"recv-size-max", MAX_MSG + RECV_SLACK), "set recv-size-max")
        self._check(lib.nng_listen(self.sock, url.encode(), None, 0), "listen on %s" % url)

    def _check(self, rv, what):
        if rv != 0:
            raise NngError("cannot %s: %s" % (what, self.lib.nng_strerror(rv).decode()))

    def recv(self):
        """The next message, or None when the receive timed out."""
        buf, size = ctypes.c_void_p(), ctypes.c_size_t()
        rv = self.lib.nng_recv(self.sock, ctypes.byref(buf), ctypes.byref(size), Nng.FLAG_ALLOC)
        if rv == Nng.ETIMEDOUT:
            return None
        self._check(rv, "receive")
        data = ctypes.string_at(buf, size.value)
        self.lib.nng_free(buf, size)
        return data

    def send(self, data):
        rv = self.lib.nng_send(self.sock, data, len(data), 0)  # copies the bytes
        if rv != 0:
            log("WARN", "reply not sent: %s" % self.lib.nng_strerror(rv).decode())

    def close(self):
        self.lib.nng_close(self.sock)


# ---- The store: business tables and the idempotency records --------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
  customer TEXT PRIMARY KEY,
  points   INTEGER NOT NULL CHECK (points >= 0));
CREATE TABLE IF NOT EXISTS awards (
  award_id      TEXT PRIMARY KEY,
  saga_id       TEXT NOT NULL,
  customer      TEXT NOT NULL REFERENCES accounts (customer),
  order_id      TEXT,
  points        INTEGER NOT NULL CHECK (points >= 0),
  state         TEXT NOT NULL CHECK (state IN ('awarded', 'revoked')),
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL);
CREATE VIEW IF NOT EXISTS points_audit AS
  SELECT a.customer, a.points,
         (SELECT coalesce(sum(w.points), 0) FROM awards w
           WHERE w.customer = a.customer AND w.state = 'awarded') AS held,
         a.points = (SELECT coalesce(sum(w.points), 0) FROM awards w
           WHERE w.customer = a.customer AND w.state = 'awarded') AS balanced
  FROM accounts a;
CREATE TABLE IF NOT EXISTS lt_idempotency (
  idempotency_key TEXT PRIMARY KEY,
  saga_id TEXT NOT NULL, step TEXT NOT NULL,
  phase INTEGER NOT NULL CHECK (phase IN (0, 1)),
  operation TEXT NOT NULL,
  fingerprint BLOB NOT NULL,
  outcome INTEGER NOT NULL,
  reply BLOB NOT NULL,
  result TEXT NOT NULL,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lt_barrier (
  saga_id TEXT NOT NULL, step TEXT NOT NULL,
  phase INTEGER NOT NULL CHECK (phase IN (0, 1)),
  kind TEXT NOT NULL CHECK (kind = 'record' OR (kind = 'fence' AND phase = 0)),
  owner_key TEXT NOT NULL,
  PRIMARY KEY (saga_id, step, phase)) WITHOUT ROWID;
"""


def open_private_db(path):
    """Opens path, created 0600; refuses a file another user owns or may read."""
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    for f in (path, path + "-wal", path + "-shm"):
        try:
            st = os.lstat(f)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise RuntimeError("%s must be a regular file of this user with mode 0600 (chmod 600 %s)" % (f, f))
    db = sqlite3.connect(path, isolation_level=None, timeout=2.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("BEGIN IMMEDIATE")
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.execute("COMMIT")
    bad = db.execute("SELECT count(*) FROM points_audit WHERE NOT balanced").fetchone()[0]
    if bad:
        raise RuntimeError("the loyalty books do not balance: %d account(s) in points_audit" % bad)
    return db


def fingerprint(req):
    """What makes two deliveries the same request: everything but the key and attempt."""
    canon = [req.saga_id, req.step, int(req.phase), req.operation, sorted(req.params.items())]
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).digest()


def pack_reply(key, outcome, result=None, error="", replayed=False):
    r = saga_pb2.StepReply(idempotency_key=key, outcome=outcome, replayed=replayed, error=error)
    for k, v in (result or {}).items():
        r.result[k] = v
    return r.SerializeToString()


# ---- The business: handlers ---------------------------------------------------


class Reject(Exception):
    """A business refusal: its SQL is rolled back, the reply stored."""


def param_name(params, name):
    v = params.get(name)
    if v is None:
        raise Reject("missing parameter '%s'" % name)
    if not 1 <= len(v.encode()) <= 128 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in v):
        raise Reject("parameter '%s' must be 1 to 128 bytes without control characters" % name)
    return v


def param_int(params, name, lo, hi):
    v = params.get(name)
    if v is None:
        raise Reject("missing parameter '%s'" % name)
    if not (v.isascii() and v.isdigit() and (v == "0" or not v.startswith("0")) and lo <= int(v) <= hi):
        raise Reject("parameter '%s' must be an integer in [%d, %d]" % (name, lo, hi))
    return int(v)


def award(db, req, params, action_result):
    """award(customer, amount[, order_id]) -> award_id, points: one point per 100 minor units."""
    customer = param_name(params, "customer")
    amount = param_int(params, "amount", 1, MAX_AMOUNT)
    order_id = params.get("order_id")
    if order_id is not None:
        param_name(params, "order_id")
    points, now, award_id = amount // 100, int(time.time() * 1000), uuid7()
    db.execute("INSERT INTO accounts (customer, points) VALUES (?, 0) ON CONFLICT (customer) DO NOTHING", (customer,))
    db.execute("UPDATE accounts SET points = points + ? WHERE customer = ?", (points, customer))
    db.execute(
        "INSERT INTO awards (award_id, saga_id, customer, order_id, points, state, created_at_ms,"
        " updated_at_ms) VALUES (?, ?, ?, ?, ?, 'awarded', ?, ?)",
        (award_id, req.saga_id, customer, order_id, points, now, now))
    return {"award_id": award_id, "points": str(points)}


def revoke(db, req, params, action_result):
    """revoke: takes back the points of the award named in the action's result."""
    award_id = action_result.get("award_id")
    if award_id is None:
        raise Reject("action result has no 'award_id'")
    row = db.execute("SELECT saga_id, customer, points, state FROM awards WHERE award_id = ?",
                     (award_id,)).fetchone()
    if row is None:
        raise Reject("unknown award")
    saga_id, customer, points, state = row
    if saga_id != req.saga_id:
        raise Reject("award '%s' belongs to another saga" % award_id)
    if state == "awarded":
        db.execute("UPDATE awards SET state = 'revoked', updated_at_ms = ? WHERE award_id = ?",
                   (int(time.time() * 1000), award_id))
        db.execute("UPDATE accounts SET points = points - ? WHERE customer = ?", (points, customer))
    return {"award_id": award_id}


# operation -> (phase, handler, partner)
OPERATIONS = {
    "award": (ACTION, award, "revoke"),
    "revoke": (COMPENSATE, revoke, "award"),
}


# ---- One message: decode, check, run in the transaction ------------------------


def check_request(req):
    """Returns None, or why req breaks the wire limits (proto/saga.proto)."""
    strings = [("idempotency_key", req.idempotency_key, 1, MAX_KEY), ("saga_id", req.saga_id, 1, MAX_SAGA_ID),
               ("step", req.step, 1, MAX_NAME), ("operation", req.operation, 1, MAX_NAME)]
    for name, value, lo, hi in strings:
        if not lo <= len(value.encode()) <= hi:
            return "field '%s' must be %d..%d bytes" % (name, lo, hi)
    if req.phase not in (ACTION, COMPENSATE):
        return "unknown phase %d" % req.phase
    if len(req.params) > MAX_PARAMS:
        return "more than %d params" % MAX_PARAMS
    for k, v in req.params.items():
        if not 1 <= len(k.encode()) <= MAX_NAME or len(v.encode()) > MAX_VALUE:
            return "a param name must be 1..%d bytes and a value at most %d" % (MAX_NAME, MAX_VALUE)
    texts = [req.idempotency_key, req.saga_id, req.step, req.operation] + list(req.params) + list(req.params.values())
    if any("\0" in t for t in texts):
        return "a string field contains a NUL byte"
    return None


def metric_operation(req):
    """The operation label of req: its operation when served for its phase, else None ("_unknown")."""
    op = OPERATIONS.get(req.operation)
    return req.operation if op is not None and op[0] == int(req.phase) else None


class Participant:
    def __init__(self, db, retention_s):
        self.db = db
        self.retention_ms = retention_s * 1000
        self.last_purge = 0.0
        self.metrics = loyalty_metrics.Metrics(NAME, [(name, op[0]) for name, op in OPERATIONS.items()])
        # The open transaction's counts (loyalty_metrics.TOTALS' names), kept only if it commits,
        # and whether the request being decided is not a request (unknown operation).
        self.tally = {}
        self.not_a_request = False

    def count(self, what):
        self.tally[what] = self.tally.get(what, 0) + 1

    def decode(self, msg):
        """A StepRequest, or the packed REJECTED reply for a message that breaks the rules."""
        if len(msg) == 0:
            return None, pack_reply("", REJECTED, error="empty message")
        if len(msg) > MAX_MSG:
            return None, pack_reply("", REJECTED, error="message of %d bytes is larger than %d" % (len(msg), MAX_MSG))
        req = saga_pb2.StepRequest()
        try:
            req.ParseFromString(msg)  # proto3 strings: invalid UTF-8 fails here
        except Exception:
            return None, pack_reply("", REJECTED, error="malformed message: not a saga.v1 StepRequest")
        why = check_request(req)
        if why:
            return None, pack_reply("", REJECTED, error="invalid request: " + why)
        return req, None

    def handle(self, msg):
        """One message (a StepRequest or a frame) -> the packed answer."""
        if msg[:1] == bytes([BATCH_MARK]):
            batch = saga_pb2.StepBatch()
            try:
                batch.ParseFromString(msg[1:])
            except Exception:
                batch = None
            if len(msg) > MAX_MSG or batch is None or not 1 <= len(batch.items) <= BATCH_MAX:
                self.metrics.record(totals={"malformed": 1})
                return pack_reply("", REJECTED, error="malformed frame")
            self.metrics.record(totals={"frames": 1})
            answers = self.run_transaction([bytes(i) for i in batch.items])
            return bytes([BATCH_MARK]) + saga_pb2.StepBatch(items=answers).SerializeToString()
        return self.run_transaction([msg])[0]

    def run_transaction(self, msgs):
        """Every message's reply; the well-formed ones go through ONE transaction."""
        started = time.monotonic()
        replies, work, malformed = [None] * len(msgs), [], 0
        for i, m in enumerate(msgs):
            req, bad = self.decode(m)
            if bad is not None:
                log("WARN", "rejected a malformed request")
                replies[i] = bad
                malformed += 1
            else:
                work.append((i, req))
        if not work:
            self.metrics.record(totals={"malformed": malformed})
            return replies
        db = self.db
        self.tally, counted = {}, []
        try:
            changes = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            for i, req in work:
                self.not_a_request = False
                replies[i] = self.run_request(req)
                if not self.not_a_request:
                    counted.append((i, req))
            db.execute("COMMIT")
            if db.total_changes != changes:
                self.count("syncs")  # synchronous=FULL: this COMMIT waited for the WAL's fsync
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            log("WARN", "transaction rolled back, every request answers RETRY: %s" % e)
            self.tally, counted = {"retries": len(work)}, work
            for i, req in work:
                replies[i] = pack_reply(req.idempotency_key, RETRY, error="database error, nothing stored: %s" % e)
        self.tally["malformed"] = self.tally.get("malformed", 0) + malformed
        answered = [(metric_operation(req), int(req.phase), saga_pb2.StepReply.FromString(replies[i]).outcome)
                    for i, req in counted]
        self.metrics.record(answered, time.monotonic() - started, self.tally)
        return replies

    def run_request(self, req):
        """Inside the transaction: the barrier's verdict, then the handler. Packed reply."""
        db, key = self.db, req.idempotency_key
        fp = fingerprint(req)
        db.execute("SAVEPOINT lt_request")
        before = dict(self.tally)  # what this request counted goes with its rollback
        try:
            reply = self.decide(req, fp)
            db.execute("RELEASE lt_request")
            return reply
        except sqlite3.Error as e:
            self.tally, self.not_a_request = before, False
            db.execute("ROLLBACK TO lt_request")
            db.execute("RELEASE lt_request")
            log("WARN", "request answered RETRY: %s" % e)
            self.count("retries")
            return pack_reply(key, RETRY, error="database error, nothing stored: %s" % e)

    def decide(self, req, fp):
        db, key, phase = self.db, req.idempotency_key, int(req.phase)
        row = db.execute("SELECT fingerprint, reply FROM lt_idempotency WHERE idempotency_key = ?", (key,)).fetchone()
        if row is not None:
            if bytes(row[0]) != fp:
                return self.conflict(key, "idempotency key reused with a different request")
            stored = saga_pb2.StepReply()
            stored.ParseFromString(bytes(row[1]))
            stored.replayed = True
            self.count("replays")
            return stored.SerializeToString()
        born = uuid7_time_ms(req.saga_id)
        now = int(time.time() * 1000)
        if born is not None and now - born > self.retention_ms:
            why = "saga %s began %d s ago, longer than this participant's retention of %d s" % (
                req.saga_id, (now - born) // 1000, self.retention_ms // 1000)
            log("WARN", why)
            self.count("outlived")
            return pack_reply(key, CONFLICT, error=why)
        op = OPERATIONS.get(req.operation)
        if op is None or op[0] != phase:
            log("WARN", "rejected a malformed request: unknown operation")
            self.count("malformed")
            self.not_a_request = True
            return pack_reply(key, REJECTED, error="unknown operation '%s' for phase %s"
                              % (req.operation, "action" if phase == ACTION else "compensate"))
        rows = dict(((r[0], r[1]), r[2]) for r in db.execute(
            "SELECT phase, kind, owner_key FROM lt_barrier WHERE saga_id = ? AND step = ?", (req.saga_id, req.step)))
        own = [k for (p, k) in rows if p == phase]
        other = [(k, rows[(p, k)]) for (p, k) in rows if p != phase]
        if own and own[0] == "record":
            return self.conflict(key, "this saga step's %s is already recorded under another idempotency key"
                                 % ("action" if phase == ACTION else "compensation"))
        if phase == ACTION:
            if own or other:
                return self.store(req, fp, SKIPPED, {}, "action fenced: its compensation was processed first")
            return self.run_handler(req, fp, op, {})
        if not other:
            return self.store(req, fp, SKIPPED, {}, "action never ran here: nothing to compensate (action fenced)",
                              fence=True)
        kind, owner = other[0]
        if kind == "fence":
            return self.store(req, fp, SKIPPED, {}, "action already fenced: nothing to compensate")
        action = db.execute("SELECT outcome, operation, result FROM lt_idempotency WHERE idempotency_key = ?",
                            (owner,)).fetchone()
        if action is None:
            raise sqlite3.DatabaseError("barrier row without its record (key %s)" % owner)
        if action[0] != OK:
            return self.store(req, fp, SKIPPED, {}, "action had no effect: nothing to compensate")
        if action[1] != op[2]:
            return self.conflict(key, "compensation '%s' does not undo action '%s'" % (req.operation, action[1]))
        return self.run_handler(req, fp, op, json.loads(action[2]))

    def conflict(self, key, why):
        log("WARN", "CONFLICT: %s" % why)
        self.count("conflicts")
        return pack_reply(key, CONFLICT, error=why)

    def run_handler(self, req, fp, op, action_result):
        db = self.db
        db.execute("SAVEPOINT lt_handler")
        try:
            result = op[1](db, req, dict(req.params), action_result)
        except Reject as r:
            db.execute("ROLLBACK TO lt_handler")
            db.execute("RELEASE lt_handler")
            return self.store(req, fp, REJECTED, {}, str(r))
        except sqlite3.Error:
            db.execute("ROLLBACK TO lt_handler")
            db.execute("RELEASE lt_handler")
            raise
        db.execute("RELEASE lt_handler")
        reply = self.store(req, fp, OK, result, "")
        self.count("effects")
        return reply

    def store(self, req, fp, outcome, result, error, fence=False):
        """Stores the reply with its record and barrier row (and the action's fence)."""
        db, key = self.db, req.idempotency_key
        reply = pack_reply(key, outcome, result, error)
        db.execute("INSERT INTO lt_idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (key, req.saga_id, req.step, int(req.phase), req.operation, fp, outcome, reply,
                    json.dumps(result, sort_keys=True), int(time.time() * 1000)))
        if fence:
            db.execute("INSERT INTO lt_barrier VALUES (?, ?, 0, 'fence', ?)", (req.saga_id, req.step, key))
        # A hanging action takes over its fence: the fence lives as long as the record.
        cur = db.execute(
            "INSERT INTO lt_barrier VALUES (?, ?, ?, 'record', ?) ON CONFLICT (saga_id, step, phase)"
            " DO UPDATE SET kind = 'record', owner_key = excluded.owner_key WHERE kind = 'fence'",
            (req.saga_id, req.step, int(req.phase), key))
        if cur.rowcount != 1:
            raise sqlite3.IntegrityError("the step's phase already has a record")
        if outcome == SKIPPED:
            self.count("skipped")
        return reply

    def purge(self):
        """Forgets up to PURGE_BATCH records older than the retention, with their barrier rows."""
        cutoff = int(time.time() * 1000) - self.retention_ms
        try:
            self.db.execute("BEGIN IMMEDIATE")
            old = self.db.execute("SELECT idempotency_key FROM lt_idempotency WHERE created_at < ? LIMIT ?",
                                  (cutoff, PURGE_BATCH)).fetchall()
            for (key,) in old:
                self.db.execute("DELETE FROM lt_barrier WHERE owner_key = ?", (key,))
                self.db.execute("DELETE FROM lt_idempotency WHERE idempotency_key = ?", (key,))
            self.db.execute("COMMIT")
            if old:
                self.metrics.record(totals={"purged": len(old)})
                log("INFO", "purged %d idempotency records older than the retention" % len(old))
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            log("WARN", "purge failed, tried again later: %s" % e)


# ---- Command line ----------------------------------------------------------------

USAGE = """usage: loyalty-svc [--listen URL] [--db PATH] [--retention-s S] [--metrics-url URL]
The loyalty participant (Python): award(customer, amount[, order_id]) -> award_id, points
(one point per 100 minor units); revoke, its compensation, takes them back.
  --listen URL       ipc:// address (default ipc://$XDG_RUNTIME_DIR/saga-loyalty.ipc)
  --db PATH          SQLite database, created 0600 (default loyalty.db)
  --retention-s S    how long idempotency records are kept (default 604800)
  --metrics-url URL  serve Prometheus metrics at URL/metrics and a health
                     check at URL/healthz, e.g. http://127.0.0.1:9465
  --log-format F     text (default) or json: one JSON object per line
  --version, --help
"""


def parse_args(argv):
    global LOG_JSON
    opts = {"listen": None, "db": "loyalty.db", "retention_s": DEFAULT_RETENTION_S, "metrics_url": None,
            "metrics_addr": None}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--help", "-h"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if a == "--version":
            print("loyalty-svc %s" % VERSION)
            sys.exit(0)
        if a not in ("--listen", "--db", "--retention-s", "--metrics-url", "--log-format"):
            raise ValueError("unknown option '%s'" % a)
        if i + 1 >= len(argv):
            raise ValueError("%s needs a value" % a)
        v = argv[i + 1]
        if a == "--retention-s":
            if not (v.isdigit() and 60 <= int(v) <= 10 * 365 * 86400):
                raise ValueError("--retention-s must be an integer in [60, 315360000]")
            opts["retention_s"] = int(v)
        elif a == "--log-format":
            if v not in ("text", "json"):
                raise ValueError("--log-format must be 'text' or 'json', not '%s'" % v)
            LOG_JSON = v == "json"
        elif a == "--metrics-url":
            opts["metrics_addr"] = loyalty_http.check_url("--metrics-url", v)  # ValueError: exit 2
            opts["metrics_url"] = v
        else:
            opts[a[2:]] = v
        i += 2
    if opts["listen"] is None:
        run = os.environ.get("XDG_RUNTIME_DIR")
        if not run:
            raise ValueError("--listen is required when XDG_RUNTIME_DIR is not set (never a default in shared /tmp)")
        opts["listen"] = "ipc://%s/saga-loyalty.ipc" % run
    if not opts["listen"].startswith("ipc://"):
        raise ValueError("--listen: only ipc:// addresses are served (an owner-only socket; see docs/SECURITY.md)")
    return opts


def check_socket_dir(url):
    """The ipc socket's directory must be writable by its owner alone (docs/SECURITY.md)."""
    d = os.path.dirname(os.path.abspath(url[len("ipc://"):]))
    st = os.stat(d)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise RuntimeError("the directory %s of the socket must be this user's and writable by nobody else"
                           " (chmod go-w %s)" % (d, d))


def health(db_path, stopping):
    """/healthz, like the C services' (participants/service.c): 200 {"status":"ok"} when serving
    and the database answers a read on a read-only connection opened for this probe (so a file
    removed, replaced or damaged shows at once); 503 with the reason otherwise. No token: the
    answer names no customer, amount or key; the reason is SQLite's error text, as in the log."""
    why = None
    if stopping:
        why = "stopping"
    else:
        try:
            uri = "file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(db_path))
            probe = sqlite3.connect(uri, uri=True, timeout=1.0)
            try:
                probe.execute("SELECT 1 FROM lt_barrier LIMIT 1").fetchall()
            finally:
                probe.close()
        except sqlite3.Error as e:
            why = "database %s: %s" % (db_path, e)
    doc = {"status": "ok"} if why is None else {"status": "unavailable", "reason": why}
    body = (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    return (200 if why is None else 503), "application/json", body


def start_metrics(opts, p, stopping):
    """The HTTP listener of --metrics-url, serving; raises OSError when it cannot listen."""
    family, host, port = opts["metrics_addr"]
    routes = {
        "/metrics": lambda: (200, loyalty_metrics.CONTENT_TYPE, p.metrics.text()),
        "/healthz": lambda: health(opts["db"], stopping),
    }
    server = loyalty_http.Server(family, host, port, routes, log)
    server.start()
    url = opts["metrics_url"].rstrip("/")
    log("INFO", "metrics on %s/metrics, health check on %s/healthz (port %d)" % (url, url, server.port))
    return server


def main(argv):
    try:
        opts = parse_args(argv)
    except ValueError as e:
        sys.stderr.write("loyalty-svc: %s\n%s" % (e, USAGE))
        return 2
    os.umask(0o077)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    try:
        check_socket_dir(opts["listen"])
        db = open_private_db(opts["db"])
        sock = Nng(opts["listen"], 200)
    except (RuntimeError, NngError, OSError, sqlite3.Error) as e:
        log("ERROR", str(e))
        return 1
    p = Participant(db, opts["retention_s"])
    log("INFO", "serving on %s, database %s" % (opts["listen"], opts["db"]))
    metrics = None
    if opts["metrics_url"] is not None:
        try:
            metrics = start_metrics(opts, p, stopping)
        except OSError as e:
            log("ERROR", "--metrics-url: cannot serve %s: %s" % (opts["metrics_url"], e.strerror or e))
            sock.close()
            db.close()
            return 1
    served = 0
    while not stopping:
        if time.monotonic() - p.last_purge >= PURGE_EVERY_S:
            p.purge()
            p.last_purge = time.monotonic()
        try:
            msg = sock.recv()
        except NngError as e:
            log("WARN", str(e))
            continue
        if msg is None:
            continue
        sock.send(p.handle(msg))
        served += 1
    if metrics is not None:
        metrics.close()  # /healthz said "stopping" since the signal
    sock.close()
    db.close()
    log("INFO", "stopped after %d messages" % served)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
