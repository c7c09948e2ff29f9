"""loyalty_metrics -- loyalty-svc's Prometheus metrics: the same series, under
the same names, labels, help texts and histogram buckets as the C services
(participants/service.c and participants/runtime/pt_metrics.c;
docs/OBSERVABILITY.md lists them), so one dashboard and one alert rule
cover all five participants.

What is counted (the C runtime's rules, participants/runtime/batch.c):
  1. saga_participant_requests_total{service,operation,phase,outcome} counts
     each well-formed request once, by the outcome of the reply it was sent,
     after its transaction committed (or rolled back: then RETRY). A replay
     counts under its stored outcome. A message that does not decode or names
     no operation of this service (REJECTED, nothing stored) is not a request:
     it is saga_participant_malformed_total.
  2. The operation label is a name of OPERATIONS (award, revoke), or
     "_unknown" for a key already on record reused with an operation that is
     not one of them (CONFLICT); the "_unknown" series appear once used. So
     label values never come from a peer's bytes, and a peer cannot grow the
     exposition.
  3. saga_participant_request_seconds: the time of the request's message,
     from decoding to COMMIT; every request of a frame gets the frame's time.
  4. The totals (effects, replays, ...) are added only for a transaction that
     committed; a rolled-back one adds its requests as RETRY.
  5. saga_participant_listener_restarts_total is not exported: it counts the
     C runtime's restarts of its ipc:// listener (a watchdog loyalty-svc does
     not have), so it would always be 0 here.

Threads: the serving thread calls record() once per message; HTTP threads
call text(). Both hold the one lock only to add to or copy the counters;
formatting happens outside it, so a scrape never holds the serving thread.
"""

import threading

# Same bounds as request_bounds in participants/runtime/pt_metrics.c: 100 us .. 10 s.
REQUEST_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# StepReply.outcome values 1..5 (proto/saga.proto), in the C runtime's order.
OUTCOME_NAMES = ("OK", "REJECTED", "RETRY", "CONFLICT", "SKIPPED")

UNKNOWN = "_unknown"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, help: participants/service.c's counters, in its order (less the listener's restarts).
TOTALS = (
    ("effects", "saga_participant_effects_total", "Handler calls that committed an effect (OK)."),
    ("replays", "saga_participant_replays_total",
     "Replies served from a stored idempotency record (duplicates absorbed)."),
    ("conflicts", "saga_participant_conflicts_total", "Idempotency keys reused with other parameters."),
    ("skipped", "saga_participant_barrier_skips_total",
     "Null compensations and hanging actions stopped by the barrier (SKIPPED)."),
    ("retries", "saga_participant_retries_total", "RETRY answers (database busy, handler, faults)."),
    ("malformed", "saga_participant_malformed_total", "Messages that failed to decode or validate."),
    ("purged", "saga_participant_idempotency_records_purged_total",
     "Idempotency records deleted after their retention."),
    ("frames", "saga_participant_frames_total",
     "Frames received: several step requests in one message, answered in one."),
    ("outlived", "saga_participant_outlived_retention_total",
     "Requests refused because their saga is older than the idempotency retention."),
    ("syncs", "saga_participant_syncs_total",
     "Batch commits that waited for an fdatasync of the WAL (0 under --unsafe-no-fsync; "
     "purges and checkpoints not counted)."),
)
TOTAL_KEYS = frozenset(k for k, _, _ in TOTALS)


def label_value(s):
    """Escaped for a label value (the text format's \\, " and newline)."""
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Slot:
    """One (operation, phase): answers by outcome and a latency histogram."""

    __slots__ = ("operation", "phase", "outcomes", "buckets", "count", "sum_micro")

    def __init__(self, operation, phase):
        self.operation, self.phase = operation, phase
        self.outcomes = [0] * len(OUTCOME_NAMES)
        self.buckets = [0] * (len(REQUEST_BOUNDS) + 1)  # not cumulative; the last is +Inf
        self.count = 0
        self.sum_micro = 0  # an integer, as mt_histogram keeps it

    def observe(self, outcome, seconds):
        if 1 <= outcome <= len(OUTCOME_NAMES):
            self.outcomes[outcome - 1] += 1
        i = 0
        while i < len(REQUEST_BOUNDS) and seconds > REQUEST_BOUNDS[i]:
            i += 1
        self.buckets[i] += 1
        self.count += 1
        if seconds > 0:
            self.sum_micro += int(seconds * 1e6 + 0.5)

    def copy(self):
        c = _Slot(self.operation, self.phase)
        c.outcomes, c.buckets = list(self.outcomes), list(self.buckets)
        c.count, c.sum_micro = self.count, self.sum_micro
        return c


class Metrics:
    def __init__(self, service, operations):
        """operations: (name, phase) of every operation served, phase 0 action, 1 compensate."""
        self.service = service
        self._lock = threading.Lock()
        self._slots = [_Slot(name, phase) for name, phase in operations]
        self._slots += [_Slot(UNKNOWN, 0), _Slot(UNKNOWN, 1)]
        self._index = dict(((s.operation, s.phase), i) for i, s in enumerate(self._slots))
        self._totals = dict.fromkeys(TOTAL_KEYS, 0)

    def record(self, answered=(), seconds=0.0, totals=None):
        """answered: (operation, phase, outcome) of requests answered in one message, each
        observed with its time seconds; operation None: "_unknown". totals: name -> n."""
        with self._lock:
            for operation, phase, outcome in answered:
                i = self._index.get((operation, phase))
                if i is None:
                    i = self._index[(UNKNOWN, 1 if phase == 1 else 0)]
                self._slots[i].observe(outcome, seconds)
            for k, n in (totals or {}).items():
                if k in TOTAL_KEYS:
                    self._totals[k] += n

    def text(self):
        """The exposition (bytes), as participants/service.c writes it."""
        with self._lock:
            slots = [s.copy() for s in self._slots]
            totals = dict(self._totals)
        out = []
        svc = 'service="%s"' % label_value(self.service)
        for key, name, help_text in TOTALS:
            out.append("# HELP %s %s\n# TYPE %s counter\n%s{%s} %d\n" % (name, help_text, name, name, svc,
                                                                                  totals[key]))
        shown = [s for s in slots if s.operation != UNKNOWN or s.count > 0]
        name = "saga_participant_requests_total"
        out.append("# HELP %s Well-formed step requests answered, by operation, phase and outcome.\n"
                   "# TYPE %s counter\n" % (name, name))
        for s in shown:
            labels = self._labels(svc, s)
            for k, outcome in enumerate(OUTCOME_NAMES):
                out.append('%s{%s,outcome="%s"} %d\n' % (name, labels, outcome, s.outcomes[k]))
        name = "saga_participant_request_seconds"
        out.append("# HELP %s Time to answer a request: its batch's decode, handlers and COMMIT (not the "
                   "time queued before it).\n# TYPE %s histogram\n" % (name, name))
        for s in shown:
            labels = self._labels(svc, s)
            cumulative = 0
            for i, bound in enumerate(REQUEST_BOUNDS):
                cumulative += s.buckets[i]
                out.append('%s_bucket{%s,le="%g"} %d\n' % (name, labels, bound, cumulative))
            cumulative += s.buckets[-1]
            out.append('%s_bucket{%s,le="+Inf"} %d\n' % (name, labels, cumulative))
            out.append("%s_sum{%s} %.6f\n" % (name, labels, s.sum_micro / 1e6))
            out.append("%s_count{%s} %d\n" % (name, labels, cumulative))
        return "".join(out).encode()

    @staticmethod
    def _labels(svc, s):
        return '%s,operation="%s",phase="%s"' % (svc, label_value(s.operation),
                                                  "compensate" if s.phase == 1 else "action")
