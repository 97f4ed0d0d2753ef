"""A thin synchronous etcd v3 client on the `etcd3` package's gRPC stubs.

Only this package (runner.store.etcd) imports `etcd3`/`grpc`. It exposes exactly what the
etcd store needs: ranges (paged), multi-key reads in one round trip, transactions with
compares, leases, and the raw watch stub. Every response's header revision is tracked in
`revision`. gRPC failures become `errors.StoreUnavailable` / `errors.StoreError` (`from exc`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]  # no stubs; only runner.store.etcd imports it
from etcd3 import etcdrpc

from runner import config, errors

T = TypeVar("T")
Op = Any  # an etcdrpc.RequestOp
Cmp = Any  # an etcdrpc.Compare
PAGE = 500  # keys per range page: bounded responses whatever the size of a run
_MAX_MSG = 64 * 1024 * 1024
_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class LeaseMissing(errors.StoreError):
    """etcd answered "requested lease not found": the lease expired (or was revoked) before a
    write that needs it. Where that has a meaning (a worker's lease: LeaseLost; a candidate's
    election lease: not leading) the caller catches it; anywhere else it is a store error, which
    workers and the scheduler retry and the CLI reports, never an unexpected exception."""


class Compacted(errors.StoreError):
    """etcd answered that the revision asked for has been compacted (a read at an old
    revision, or a compaction to a revision already compacted)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One key-value with its revisions."""

    key: str
    value: bytes
    create: int
    mod: int
    lease: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """Where and how to connect: endpoints and optional TLS files and credentials."""

    endpoints: tuple[tuple[str, int], ...]
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed
    tls: bool = False
    timeout: float = 5.0
    connect_timeout: float = 3.0  # opening the store fails (exit 3) when no endpoint answers

    @property
    def where(self) -> str:
        """The endpoints as the user wrote them, for messages."""
        return ",".join(f"{host}:{port}" for host, port in self.endpoints)

    @property
    def secure(self) -> bool:
        """The channel uses TLS (etcds://, or any TLS file given)."""
        return self.tls or self.ca is not None or self.cert is not None

    def tls_files(self) -> str:
        """The TLS files in use, for messages: "ca=FILE cert=FILE key=FILE"."""
        files = {"ca": self.ca, "cert": self.cert, "key": self.key}
        named = " ".join(f"{k}={v}" for k, v in files.items() if v is not None)
        return named or "the system's CA bundle and no client certificate"


def range_end(prefix: str) -> bytes:
    """The end of the key range of every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


# ---------------------------------------------------------------------- request builders


def put(key: str, value: bytes | str, lease: int = 0) -> Op:
    data = value.encode() if isinstance(value, str) else value
    return etcdrpc.RequestOp(
        request_put=etcdrpc.PutRequest(key=key.encode(), value=data, lease=lease)
    )


def delete(key: str, end: str | None = None) -> Op:
    req = etcdrpc.DeleteRangeRequest(key=key.encode())
    if end is not None:
        req.range_end = end.encode()
    return etcdrpc.RequestOp(request_delete_range=req)


def delete_prefix(prefix: str) -> Op:
    return etcdrpc.RequestOp(
        request_delete_range=etcdrpc.DeleteRangeRequest(
            key=prefix.encode(), range_end=range_end(prefix)
        )
    )


def get(key: str) -> Op:
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode()))


def count(prefix: str) -> Op:
    req = etcdrpc.RangeRequest(key=prefix.encode(), range_end=range_end(prefix), count_only=True)
    return etcdrpc.RequestOp(request_range=req)


def keys_in(prefix: str) -> Op:
    """Every key under `prefix`, keys only (with their revisions and versions)."""
    req = etcdrpc.RangeRequest(key=prefix.encode(), range_end=range_end(prefix), keys_only=True)
    return etcdrpc.RequestOp(request_range=req)


def head(prefix: str, limit: int) -> Op:
    """The first `limit` keys under `prefix`."""
    req = etcdrpc.RangeRequest(key=prefix.encode(), range_end=range_end(prefix), limit=limit)
    return etcdrpc.RequestOp(request_range=req)


def span(start: str, end: str | bytes, limit: int) -> Op:
    """The first `limit` keys in [start, end)."""
    stop = end.encode() if isinstance(end, str) else end
    req = etcdrpc.RangeRequest(key=start.encode(), range_end=stop, limit=limit)
    return etcdrpc.RequestOp(request_range=req)


def some_in(start: str, end: str) -> Cmp:
    """Some key exists in [start, end)."""
    return _created_in(start, end, etcdrpc.Compare.GREATER)


def none_in(start: str, end: str) -> Cmp:
    """No key exists in [start, end)."""
    return _created_in(start, end, etcdrpc.Compare.EQUAL)


def _created_in(start: str, end: str, result: Any) -> Cmp:
    """The range's create revision compared with 0 (an empty range compares as 0)."""
    return etcdrpc.Compare(
        key=start.encode(),
        range_end=end.encode(),
        target=etcdrpc.Compare.CREATE,
        result=result,
        create_revision=0,
    )


def changed_since(prefix: str, rev: int, limit: int) -> Op:
    """The keys under `prefix` modified at or after revision `rev` (at most `limit`)."""
    req = etcdrpc.RangeRequest(
        key=prefix.encode(), range_end=range_end(prefix), min_mod_revision=rev, limit=limit
    )
    return etcdrpc.RequestOp(request_range=req)


def value_at_least(key: str, value: str) -> Cmp:
    """The key exists and its value is at least `value` (byte order). etcd has no "greater or
    equal": the compare is "greater than `value` with its last byte one less, then 0xff",
    which no value lies strictly between for values without a 0xff byte (ASCII keys)."""
    raw = value.encode()
    below = raw[:-1] + bytes([raw[-1] - 1]) + b"\xff" if raw else b""
    return _value_cmp(key, etcdrpc.Compare.GREATER, below)


def value_above(key: str, value: str) -> Cmp:
    """The key exists and its value is greater than `value` (byte order)."""
    return _value_cmp(key, etcdrpc.Compare.GREATER, value.encode())


def value_below(key: str, value: str) -> Cmp:
    """The key exists and its value is less than `value` (byte order)."""
    return _value_cmp(key, etcdrpc.Compare.LESS, value.encode())


def _value_cmp(key: str, result: Any, value: bytes) -> Cmp:
    return etcdrpc.Compare(
        key=key.encode(), target=etcdrpc.Compare.VALUE, result=result, value=value
    )


def mod_is(key: str, mod: int) -> Cmp:
    """The key exists and was last modified at `mod` (or is absent when mod == 0)."""
    return etcdrpc.Compare(
        key=key.encode(), target=etcdrpc.Compare.MOD, result=etcdrpc.Compare.EQUAL, mod_revision=mod
    )


def created_at(key: str, rev: int) -> Cmp:
    """The key was created at `rev`; 0 means the key does not exist."""
    return etcdrpc.Compare(
        key=key.encode(),
        target=etcdrpc.Compare.CREATE,
        result=etcdrpc.Compare.EQUAL,
        create_revision=rev,
    )


def version_is(key: str, version: int) -> Cmp:
    """The key has been written `version` times since it was created (0: absent)."""
    return etcdrpc.Compare(
        key=key.encode(),
        target=etcdrpc.Compare.VERSION,
        result=etcdrpc.Compare.EQUAL,
        version=version,
    )


def nested(compare: Sequence[Cmp], success: Sequence[Op], failure: Sequence[Op] = ()) -> Op:
    """A transaction inside a transaction. etcd evaluates every compare of a transaction,
    nested ones included, before any of its writes."""
    op = etcdrpc.RequestOp()
    txn = op.request_txn  # built in place: each operation copied once, not twice
    txn.compare.extend(compare)
    txn.success.extend(success)
    txn.failure.extend(failure)
    return op


def unchanged_since(prefix: str, rev: int) -> Cmp:
    """No key under `prefix` was created or modified after revision `rev`."""
    return etcdrpc.Compare(
        key=prefix.encode(),
        range_end=range_end(prefix),
        target=etcdrpc.Compare.MOD,
        result=etcdrpc.Compare.LESS,
        mod_revision=rev + 1,
    )


def items_of(responses: Sequence[Any]) -> list[Item]:
    """The key-values returned by the range operations among a transaction's responses."""
    return [_item(kv) for r in responses for kv in r.response_range.kvs]


def _item(kv: Any) -> Item:
    return Item(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision, kv.lease)


def least_put_under(ops: Sequence[Op], prefix: bytes) -> bytes | None:
    """The least key under `prefix` that `ops` put, in any branch of their nested
    transactions (None: none)."""
    least: bytes | None = None
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            key = op.request_put.key
            if key.startswith(prefix) and (least is None or key < least):
                least = key
        elif kind == "request_txn":
            for branch in (op.request_txn.success, op.request_txn.failure):
                found = least_put_under(branch, prefix)
                if found is not None and (least is None or found < least):
                    least = found
    return least


def _puts_under(ops: Sequence[Op], prefix: bytes) -> bool:
    """Whether `ops` (nested transactions' success branches included) put a key under
    `prefix`."""
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put" and op.request_put.key.startswith(prefix):
            return True
        if kind == "request_txn" and _puts_under(op.request_txn.success, prefix):
            return True
    return False


# ---------------------------------------------------------------------- the client


class Client:
    """One gRPC channel to the cluster (pick_first over every endpoint), thread-safe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.revision = 0
        self.tracked = b"\xff"  # see `track`
        self.tracked_rev = 0
        self.floored: tuple[bytes, bytes] | None = None  # see `keep_floor`
        self._lock = threading.Lock()
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._closed = False
        self.channel = _channel(conn)
        self.kv = etcdrpc.KVStub(self.channel)
        self.leases = etcdrpc.LeaseStub(self.channel)
        self.watch_stub = etcdrpc.WatchStub(self.channel)
        self._auth = etcdrpc.AuthStub(self.channel)
        self._wait_connected()
        if conn.user is not None:
            self._authenticate()

    def _wait_connected(self) -> None:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=self.conn.connect_timeout)
        except grpc.FutureTimeoutError:
            self.channel.close()
            raise _not_connected(self.conn) from None

    def close(self) -> None:
        self._closed = True
        self.channel.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return self._metadata

    def _authenticate(self) -> None:
        req = etcdrpc.AuthenticateRequest(name=self.conn.user, password=self.conn.password or "")
        try:
            resp = self._auth.Authenticate(req, timeout=self.conn.timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code in _UNAVAILABLE:
                raise _mapped(exc, "authenticate", self.conn.where) from exc
            raise errors.ConfigError(  # waiting cures no wrong password: not StoreUnavailable
                f"etcd at {self.conn.where} refused the credentials of user "
                f"{self.conn.user!r}: {_detail(exc)}; check {config.ENV_ETCD_USER} and "
                f"{config.ENV_ETCD_PASSWORD} (or {config.ENV_ETCD_PASSWORD_FILE})"
            ) from exc
        self._metadata = (("token", resp.token),)

    def _seen(self, header: Any) -> None:
        with self._lock:
            self.revision = max(self.revision, int(header.revision))

    def track(self, prefix: str) -> None:
        """Keep in `tracked_rev` the latest revision of a transaction of this client that put
        a key under `prefix` (a store object's own queue writes, which its watch may not have
        delivered yet)."""
        self.tracked = prefix.encode()

    def keep_floor(self, prefix: str, floor_key: str) -> None:
        """Keep `floor_key` a lower bound of the keys under `prefix`: every transaction of
        this client that puts a key there (in any branch) also puts that key in `floor_key`
        when the floor's value is above it, in the same transaction, so a read that finds
        the floor's value at one revision may start there (`head`). A missing floor is left
        missing (readers then start at the prefix)."""
        self.floored = (prefix.encode(), floor_key.encode())

    def _floored(self, ops: Sequence[Op]) -> list[Op]:
        """`ops`, and the lowering of the floor to the least key they put under the prefix."""
        if self.floored is None:
            return list(ops)
        prefix, floor_key = self.floored
        least = least_put_under(ops, prefix)
        if least is None:
            return list(ops)
        above = etcdrpc.Compare(
            key=floor_key, target=etcdrpc.Compare.VALUE, result=etcdrpc.Compare.GREATER, value=least
        )
        lower = etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=floor_key, value=least))
        return [*ops, nested([above], [lower])]

    def call(self, fn: Callable[..., T], request: Any, what: str, *, retry: bool = False) -> T:
        """Call one unary RPC; re-authenticate once on an expired token; retry reads once
        when a member went away (the channel reconnects to another endpoint)."""
        for attempt in range(3):
            try:
                return fn(
                    request, timeout=self.conn.timeout, metadata=self._metadata, wait_for_ready=True
                )
            except ValueError:  # grpc's "Cannot invoke RPC on closed channel!"
                if not self._closed:
                    raise
                raise errors.StoreError(f"etcd store ({what}): used after close()") from None
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                again = attempt < 2 and (
                    (code is grpc.StatusCode.UNAUTHENTICATED and self.conn.user is not None)
                    or (retry and code in _UNAVAILABLE)
                )
                if not again:
                    raise _mapped(exc, what, self.conn.where) from exc
                if code is grpc.StatusCode.UNAUTHENTICATED:
                    self._authenticate()
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Item | None:
        resp = self.call(self.kv.Range, etcdrpc.RangeRequest(key=key.encode()), key, retry=True)
        self._seen(resp.header)
        return _item(resp.kvs[0]) if resp.kvs else None

    def scan(self, prefix: str, *, keys_only: bool = False, page: int = PAGE) -> list[Item]:
        """Every key under `prefix` in key order, read page by page at one revision."""
        return self.scan_at(prefix, keys_only=keys_only, page=page)[0]

    def scan_at(
        self,
        prefix: str,
        *,
        keys_only: bool = False,
        page: int = PAGE,
        min_mod: int = 0,
        revision: int = 0,
    ) -> tuple[list[Item], int]:
        """`scan` (at `revision` when set), only keys modified at or after `min_mod` when set,
        and the read revision. Pages are read at the first one's revision; when a compaction
        passed it meanwhile the scan starts again at the current revision (at `revision`, when
        set, it raises `Compacted`)."""
        out: list[Item] = []
        start, end, rev = prefix.encode(), range_end(prefix), revision
        while True:
            req = etcdrpc.RangeRequest(
                key=start,
                range_end=end,
                limit=page,
                keys_only=keys_only,
                revision=rev,
                min_mod_revision=min_mod,
            )
            try:
                resp = self.call(self.kv.Range, req, prefix, retry=True)
            except Compacted:
                if revision:
                    raise  # the caller's revision: the caller reads again
                # history was compacted past the first page's revision (a periodic compaction
                # keeps seconds of it): read again from the start at the current revision
                out, start, rev = [], prefix.encode(), 0
                continue
            self._seen(resp.header)
            rev = rev or int(resp.header.revision)
            out.extend(_item(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, rev
            start = resp.kvs[-1].key + b"\0"

    def first(self, prefix: str, limit: int) -> tuple[list[Item], int]:
        """The first `limit` keys under `prefix` and the revision read at."""
        req = etcdrpc.RangeRequest(key=prefix.encode(), range_end=range_end(prefix), limit=limit)
        resp = self.call(self.kv.Range, req, prefix, retry=True)
        self._seen(resp.header)
        return [_item(kv) for kv in resp.kvs], int(resp.header.revision)

    def count(self, prefix: str) -> int:
        req = etcdrpc.RangeRequest(
            key=prefix.encode(), range_end=range_end(prefix), count_only=True
        )
        resp = self.call(self.kv.Range, req, prefix, retry=True)
        self._seen(resp.header)
        return int(resp.count)

    def read_many(self, keys: Iterable[str], *, chunk: int = 120) -> tuple[dict[str, Item], int]:
        """Read many keys in as few round trips as etcd's limits allow; the revision of the
        first read (later chunks may be newer: callers compare what they rely on)."""
        found: dict[str, Item] = {}
        wanted = list(dict.fromkeys(keys))
        first_rev = 0
        for i in range(0, len(wanted), chunk):
            part = wanted[i : i + chunk]
            req = etcdrpc.TxnRequest(success=[get(k) for k in part])
            resp = self.call(self.kv.Txn, req, f"{len(part)} keys", retry=True)
            self._seen(resp.header)
            first_rev = first_rev or int(resp.header.revision)
            for r in resp.responses:
                found.update((kv.key.decode(), _item(kv)) for kv in r.response_range.kvs)
        return found, first_rev

    def counts(self, prefixes: Sequence[str], *, chunk: int = 120) -> list[int]:
        """Number of keys under each prefix, in few round trips."""
        out: list[int] = []
        for i in range(0, len(prefixes), chunk):
            req = etcdrpc.TxnRequest(success=[count(p) for p in prefixes[i : i + chunk]])
            resp = self.call(self.kv.Txn, req, "counts", retry=True)
            self._seen(resp.header)
            out.extend(int(r.response_range.count) for r in resp.responses)
        return out

    # ------------------------------------------------------------------ writes

    def reads(self, ops: Sequence[Op], what: str) -> tuple[list[Any], int]:
        """Several read operations in one round trip at one revision: responses, revision."""
        resp = self.call(self.kv.Txn, etcdrpc.TxnRequest(success=list(ops)), what, retry=True)
        self._seen(resp.header)
        return list(resp.responses), int(resp.header.revision)

    def txn(
        self,
        compare: Sequence[Cmp],
        success: Sequence[Op],
        what: str,
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """One transaction: apply `success` if every compare holds, else run `failure` (reads,
        so a caller learns the current values without another round trip). Never retried
        here: a caller whose compare failed decides again. A branch that puts a queue entry
        also lowers the queue's floor (`keep_floor`), in an operation after the caller's."""
        then, other = self._floored(success), self._floored(failure)
        req = etcdrpc.TxnRequest(compare=list(compare), success=then, failure=other)
        resp = self.call(self.kv.Txn, req, what)
        self._seen(resp.header)
        if _puts_under(success if resp.succeeded else failure, self.tracked):
            with self._lock:
                self.tracked_rev = max(self.tracked_rev, int(resp.header.revision))
        responses = list(resp.responses)
        branch, ran = (success, then) if resp.succeeded else (failure, other)
        del responses[len(branch) : len(ran)]  # the floor's lowering: not the caller's op
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), responses)

    # ------------------------------------------------------------------ leases

    def grant(self, ttl: float) -> int:
        """A new lease of at least `ttl` seconds (etcd counts whole seconds)."""
        req = etcdrpc.LeaseGrantRequest(TTL=max(1, round(ttl + 0.499)))
        resp = self.call(self.leases.LeaseGrant, req, "lease grant")
        self._seen(resp.header)
        return int(resp.ID)

    def keepalive(self, lease: int) -> int:
        """Refresh a lease; its TTL afterwards (0: the lease has expired)."""
        req = etcdrpc.LeaseKeepAliveRequest(ID=lease)
        try:
            for resp in self.leases.LeaseKeepAlive(
                iter([req]), timeout=self.conn.timeout, metadata=self._metadata, wait_for_ready=True
            ):
                return int(resp.TTL)
        except grpc.RpcError as exc:
            raise _mapped(exc, "lease keep-alive", self.conn.where) from exc
        return 0

    def revoke(self, lease: int) -> None:
        try:
            self.call(self.leases.LeaseRevoke, etcdrpc.LeaseRevokeRequest(ID=lease), "revoke")
        except LeaseMissing:
            return


def _channel(conn: Connection) -> grpc.Channel:
    """One channel over every endpoint: gRPC fails over to the next address by itself."""
    addrs = [_resolve(host, port) for host, port in conn.endpoints]
    target = "ipv4:" + ",".join(addrs) if all("[" not in a for a in addrs) else addrs[0]
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", _MAX_MSG),
        ("grpc.max_send_message_length", _MAX_MSG),
        ("grpc.lb_policy_name", "pick_first"),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.keepalive_time_ms", 10000),
    ]
    if conn.ca is None and conn.cert is None and not conn.tls:
        return grpc.insecure_channel(target, options=options)
    options.append(("grpc.ssl_target_name_override", conn.endpoints[0][0]))
    return grpc.secure_channel(target, _credentials(conn), options=options)


def _resolve(host: str, port: int) -> str:
    """host:port with the host resolved to an IPv4 address (for one multi-address target)."""
    try:
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return f"[{host}]:{port}"  # left to gRPC's own resolver (single endpoint)
    return f"{info[0][4][0]}:{port}"


def _credentials(conn: Connection) -> grpc.ChannelCredentials:
    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise errors.ConfigError(f"etcd TLS file {path}: {exc.strerror}") from exc

    return grpc.ssl_channel_credentials(read(conn.ca), read(conn.key), read(conn.cert))


def _not_connected(conn: Connection) -> errors.StoreUnavailable:
    """Why no endpoint answered: nothing listens, or (over TLS) the handshake failed."""
    wait = f"{conn.connect_timeout:g} s"
    if conn.secure and any(_listening(host, port) for host, port in conn.endpoints):
        return errors.StoreUnavailable(
            f"etcd at {conn.where}: TLS handshake failed within {wait} using "
            f"{conn.tls_files()}; check that ca= names the CA that signed the server's "
            "certificate and that cert= and key= are a client certificate the server trusts"
        )
    return errors.StoreUnavailable(
        f"etcd unreachable at {conn.where}: no endpoint answered within {wait}; "
        "check the store URL and that etcd is running"
    )


def _listening(host: str, port: int) -> bool:
    """A TCP connection to host:port can be opened."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _detail(exc: grpc.RpcError) -> str:
    return str(exc.details()) if isinstance(exc, grpc.Call) else str(exc)


def _mapped(exc: grpc.RpcError, what: str, where: str) -> Exception:
    """The runner error for a gRPC failure (the caller raises it `from exc`)."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = _detail(exc)
    if code is grpc.StatusCode.NOT_FOUND and "lease" in (detail or ""):
        return LeaseMissing(
            f"etcd error ({what}): {detail}: the lease expired before the write; try again"
        )
    if code is grpc.StatusCode.OUT_OF_RANGE and "compacted" in (detail or ""):
        return Compacted(f"etcd error ({what}): {detail}")
    if code in _UNAVAILABLE:
        return errors.StoreUnavailable(
            f"etcd unreachable at {where} ({what}): {detail}; check the store URL and that etcd"
            " is running"
        )
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.StoreError(
            f"etcd refused a write ({what}): {detail}; when the space quota is exceeded,"
            " compact and defragment etcd and disarm the NOSPACE alarm"
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return errors.StoreUnavailable(
            f"etcd at {where} refused access to {what}: {detail}; the etcd user needs a role"
            " granting readwrite on the store's prefix"
        )
    if "user name is empty" in (detail or ""):
        return errors.StoreUnavailable(
            f"etcd at {where} requires authentication ({what}); set {config.ENV_ETCD_USER}"
            f" and {config.ENV_ETCD_PASSWORD} or {config.ENV_ETCD_PASSWORD_FILE}"
        )
    return errors.StoreError(f"etcd error ({what}): {detail}")
