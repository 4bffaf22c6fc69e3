"""The shared-state contract every backend honours.

The gateway keeps the state that must agree across replicas behind this interface: which tenant
owns which upstream request id, and each tenant's job index (newest first, filterable by model)
with the last upstream record seen for each job. The docstrings here *are* the contract; the
contract suite in ``tests/store/`` holds both backends to every sentence of them.

Time is an argument: backends take a clock (``Callable[[], float]``, unix seconds) at
construction and never read the wall clock themselves, so a fake clock drives both identically.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = (
    "Charge",
    "Decision",
    "Idempotency",
    "IdempotencyState",
    "JobPage",
    "LimitState",
    "Poll",
    "Settlement",
    "Store",
    "StoreError",
    "StoredJob",
    "SubmitLimits",
    "SubmitStart",
)

SUBMITS_PER_MINUTE = "submits_per_minute"
READS_PER_MINUTE = "reads_per_minute"
MAX_CONCURRENT_JOBS = "max_concurrent_jobs"
VIDEO_SECONDS_PER_DAY = "video_seconds_per_day"
VIDEO_SECONDS_PER_MONTH = "video_seconds_per_month"


class StoreError(Exception):
    """The backend could not be reached or answered with an error.

    Every backend wraps its own failures (connection refused, timeouts, script errors) in this one
    type so callers never import a backend's exception classes. The message never contains a URL
    with credentials.
    """


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One job the gateway accepted, as the store keeps it.

    Attributes:
        tenant: id of the owning tenant.
        request_id: the upstream request id.
        model: the model id the job was submitted for.
        created_at: gateway clock (unix seconds, float) when the job was recorded.
        record: the latest upstream JSON record of the job, as raw bytes (passed through to
            clients unchanged).
    """

    tenant: str
    request_id: str
    model: str
    created_at: float
    record: bytes


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of a tenant's job index: ``jobs`` newest first and ``total`` matching jobs."""

    jobs: list[StoredJob]
    total: int


@dataclass(frozen=True, slots=True)
class SubmitLimits:
    """The limits a submit is checked against; ``None`` is unlimited."""

    submits_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    video_seconds_per_day: int | None = None
    video_seconds_per_month: int | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """What one submit reserves: a concurrency slot ``token`` and ``cost`` video seconds
    charged to the UTC ``day`` and ``month`` (period keys like ``2026-11-23``, ``2026-11``).

    ``day_ends_at`` / ``month_ends_at`` are when those periods end (unix seconds): budget
    counters are kept until then (plus a margin for late refunds) and rejections say how long
    until they reset.
    """

    token: str
    cost: int
    day: str
    month: str
    day_ends_at: float
    month_ends_at: float


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit after a decision, as the IETF RateLimit headers need it.

    Attributes:
        name: the limit's name in the tenants file (``submits_per_minute`` …).
        limit: the configured value.
        remaining: units left now (never negative).
        reset_after: for rates, seconds until at least one more unit is available (0 while
            some remain); for budgets, seconds until the period ends; for concurrency 0 (only
            a finishing job frees a slot, at a time nobody knows).
        used: for budgets and concurrency, the count held against the limit, which exceeds
            ``limit`` after the limit was lowered; ``None`` for rates (``limit - remaining``).
    """

    name: str
    limit: int
    remaining: int
    reset_after: float
    used: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a quota check: ``limits`` holds every configured limit's state.

    When ``allowed`` is false, ``violated`` names the first violated limit in the order
    submits_per_minute, max_concurrent_jobs, video_seconds_per_day, video_seconds_per_month
    (reads: reads_per_minute), ``retry_after`` is seconds until a retry can pass that limit
    (budgets: until the period ends; concurrency: ``None``, as only a finishing job frees a
    slot) and nothing at all was reserved or consumed.
    """

    allowed: bool
    limits: tuple[LimitState, ...]
    violated: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """A job's charge was settled: ``refunded`` video seconds went back (0 when kept).
    ``late``: an expired job, refunded then, succeeded after all and was charged again."""

    cost: int
    refunded: int
    late: bool = False


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An ``Idempotency-Key`` and the fingerprint of the request that came with it; ``ttl`` is
    how long the operation it is given to keeps it (a claim, or a stored answer). For
    ``add_job``, ``token`` is the reservation whose ``begin_submit`` claimed the key: only that
    claim (or none) takes the job as its answer."""

    key: str
    fingerprint: str
    ttl: float
    token: str = ""


@dataclass(frozen=True, slots=True)
class IdempotencyState:
    """Where an ``Idempotency-Key`` stands for a given request fingerprint.

    ``outcome`` is ``new`` (this caller now owns the key and must finish or abandon it),
    ``pending`` (another request with this key is in flight), ``mismatch`` (the key was used
    with a different request) or ``done`` (``status`` and ``body`` hold the stored answer).
    """

    outcome: str
    status: int = 0
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class SubmitStart:
    """What ``begin_submit`` did: ``claim`` is where the key stands (``None`` without a key);
    ``decision`` is the reservation's, ``None`` when the key was not ``new`` (nothing was
    reserved)."""

    claim: IdempotencyState | None
    decision: Decision | None


@dataclass(frozen=True, slots=True)
class Poll:
    """A status poll's store work: the read spent (``None`` when reads are unlimited), the job
    (``None`` when the read was refused, or the id is unknown or another tenant's), and whether
    this caller won the refresh claim (see ``claim_refresh``)."""

    read: Decision | None
    job: StoredJob | None
    claimed: bool


class Store(abc.ABC):
    """Shared state of the gateway.

    Keys are scoped by tenant: one tenant can never see, overwrite or count another tenant's
    jobs, even when two tenants use the same request id string.
    """

    @abc.abstractmethod
    async def add_job(
        self,
        tenant: str,
        request_id: str,
        model: str,
        record: bytes,
        *,
        charge: Charge | None = None,
        deadline: float | None = None,
        idempotency: Idempotency | None = None,
        answer: bytes | None = None,
    ) -> StoredJob:
        """Record that ``tenant`` owns ``request_id`` and add it to the tenant's job index.

        ``created_at`` is taken from the store's clock. Adding an id the tenant already owns
        keeps the original ``created_at`` and index position and replaces only the record
        (not a final one: see ``update_job_record``).
        A job is retained for the store's ``job_retention_seconds`` after it was added; after
        that it is gone from lookups, the index and the totals.

        With a ``charge`` (reserved by ``begin_submit``), the job carries it until it is
        settled: its concurrency slot is held until ``deadline`` (unix seconds) at the latest,
        and the job is listed by ``jobs_to_reconcile`` until settled.

        With ``idempotency`` (a key ``begin_submit`` claimed), the same atomic step stores
        ``answer`` (default: ``record``) as the key's answer (status 200) for
        ``idempotency.ttl`` seconds, as ``finish_idempotent`` would; unless the key already has
        an answer, or another submit's claim (``idempotency.token`` names this submit's): a
        job written back after an outage must not take what another submit with the key got
        or holds meanwhile.
        """

    @abc.abstractmethod
    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        """Return the job if ``tenant`` owns ``request_id``, else ``None`` (unknown or foreign)."""

    @abc.abstractmethod
    async def update_job_record(
        self, tenant: str, request_id: str, record: bytes, *, final: bool = False
    ) -> bool:
        """Replace the stored record of an owned job, unless a ``final`` one (the job ended)
        was stored before: an older answer that arrives late must not turn it back. Return
        ``False`` (and write nothing) if ``tenant`` does not own ``request_id``."""

    @abc.abstractmethod
    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        """Return the tenant's jobs newest first (ties: larger request id first).

        ``model`` filters to jobs of that model id (exact, case-sensitive). ``total`` counts every
        matching job, not just the page. ``limit`` >= 1 and ``offset`` >= 0 are the caller's to
        validate; an offset past the end gives an empty page with the true total.
        """

    @abc.abstractmethod
    async def poll_job(
        self, tenant: str, request_id: str, *, reads_per_minute: int | None, refresh_ttl: float
    ) -> Poll:
        """Everything a status poll needs from the store, in one atomic step (one round trip on
        Redis): ``take_read`` when reads are limited (a refused read does nothing else), then
        ``get_job``, then ``claim_refresh`` for a job the tenant owns."""

    @abc.abstractmethod
    async def claim_refresh(self, tenant: str, request_id: str, *, ttl: float) -> bool:
        """Claim the right to ask the upstream for this job's status for the next ``ttl``
        seconds. Only one claim succeeds per window, whatever the number of replicas: the
        others serve the stored record, so N pollers of one job cost one upstream call."""

    @abc.abstractmethod
    async def begin_submit(
        self,
        tenant: str,
        charge: Charge,
        limits: SubmitLimits,
        *,
        hold_until: float,
        idempotency: Idempotency | None = None,
    ) -> SubmitStart:
        """Claim the submit's ``Idempotency-Key`` and reserve its limits in one atomic step.

        With ``idempotency``, the key is checked first (see ``IdempotencyState``): unless it is
        ``new`` nothing else happens. Then every limit in ``limits`` is checked and, only if all
        pass, all are consumed at once, whatever the number of replicas: N concurrent calls
        against a limit of L allow exactly L. On success the submit rate is consumed,
        ``charge.cost`` is added to the day and month budgets, the slot ``charge.token`` is held
        until ``hold_until`` (unless ``add_job`` extends it to the job's deadline) and the key
        is claimed for ``idempotency.ttl`` seconds. On rejection nothing changes, so the key
        stays free for a retry.

        A call that raises ``StoreError`` may still take effect later (a reply lost on the way
        back); a backend where that can happen gives such a reservation back, and frees its
        key, once it can (unless told ``submit_goes_on``).
        """

    @abc.abstractmethod
    def submit_goes_on(self, charge: Charge) -> None:
        """The submit of ``charge``, whose ``begin_submit`` here raised ``StoreError``, goes on
        under another store (the open failure mode): its reservation here is still given back,
        but its Idempotency-Key stays claimed, so a retry with the key cannot make a second
        job."""

    @abc.abstractmethod
    async def release(self, tenant: str, charge: Charge) -> bool:
        """Undo a reservation whose submit the upstream rejected: free the slot and refund the
        budgets (the submit rate stays consumed). Only the first call for a token has effect;
        returns whether this call released it."""

    @abc.abstractmethod
    async def settle(
        self, tenant: str, request_id: str, *, refund: bool, expired: bool = False
    ) -> Settlement | None:
        """Settle a charged job exactly once: free its slot and, if ``refund``, give its cost
        back to the periods it was charged to. Returns ``None`` when there is nothing to settle
        (unknown, uncharged or already settled job), so concurrent settlers settle once.

        ``expired``: the job is still running past its deadline. It is refunded (``refund`` is
        implied) and its slot freed, but it stays listed for the reconciler, and stays open to
        one more settlement: without ``refund`` (it succeeded after all, and the upstream bills
        it) it is charged again (``Settlement.late``); with ``refund`` it is closed silently.
        """

    @abc.abstractmethod
    async def take_read(self, tenant: str, reads_per_minute: int) -> Decision:
        """Consume one read from the tenant's read rate, or reject without consuming."""

    @abc.abstractmethod
    async def usage(
        self, tenant: str, limits: SubmitLimits, reads_per_minute: int | None, charge: Charge
    ) -> tuple[tuple[LimitState, ...], int]:
        """Every configured limit's state without consuming anything, and the number of slots
        in use. ``charge`` supplies the current periods (its token and cost are ignored)."""

    @abc.abstractmethod
    async def spent(self, tenant: str, charge: Charge) -> tuple[int, int]:
        """The video seconds charged in ``charge``'s day and month, limited or not."""

    @abc.abstractmethod
    async def jobs_in_flight(self, tenants: Sequence[str]) -> dict[str, int]:
        """Each tenant's slots in use (as ``usage`` counts them), all read in one step."""

    @abc.abstractmethod
    async def jobs_to_reconcile(
        self, *, checked_before: float, limit: int
    ) -> list[tuple[str, str, float]]:
        """Up to ``limit`` unsettled charged jobs of any tenant not checked since
        ``checked_before``, oldest check first, as ``(tenant, request_id, created_at)``."""

    @abc.abstractmethod
    async def mark_checked(self, tenant: str, request_id: str, *, defer: float = 0.0) -> None:
        """Note that an unsettled job's upstream status was just seen (a poll or the
        reconciler), so the reconciler leaves it alone for a while: ``defer`` seconds more."""

    @abc.abstractmethod
    async def finish_idempotent(
        self, tenant: str, key: str, fingerprint: str, status: int, body: bytes, *, ttl: float
    ) -> None:
        """Store the answer for a key ``begin_submit`` claimed; replays get it for ``ttl``
        seconds."""

    @abc.abstractmethod
    async def abandon_idempotent(self, tenant: str, key: str) -> None:
        """Forget a claimed key (the request had no effect; the client may retry it)."""

    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` for ``ttl`` seconds; ``False``
        while another holder's lease is unexpired."""

    @abc.abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give up ``holder``'s lease ``name`` before it expires, so another can take it at
        once; nothing if another holder has it by now."""

    @abc.abstractmethod
    async def append_audit(self, events: Sequence[tuple[str | None, bytes]]) -> None:
        """Append encoded audit events, each to the global trail and to its tenant's trail
        (``None``: global only). Trails are bounded: at most ``audit_max_events`` entries each,
        and entries older than ``audit_retention_seconds`` are dropped as new ones arrive."""

    @abc.abstractmethod
    async def read_audit(
        self,
        tenant: str | None,
        *,
        before: str | None,
        count: int,
        written_after: float | None = None,
    ) -> list[tuple[str, bytes]]:
        """Up to ``count`` entries of a trail (a tenant's, or the global one for ``None``),
        newest first, strictly older than the entry id ``before`` when given, and never one
        past the audit retention (trimmed yet or not), nor one appended at or before
        ``written_after`` (unix seconds) when given. Entry ids are opaque cursors, ordered by
        insertion."""

    @abc.abstractmethod
    async def cache_get(self, name: str) -> tuple[bytes, float] | None:
        """A shared cache entry (value, and when it was stored by the store's clock), if any."""

    @abc.abstractmethod
    async def cache_put(self, name: str, value: bytes, *, generation: int) -> bool:
        """Store a shared cache entry, stamped with the store's clock, if the cache generation
        is still ``generation`` (the one the value was asked for under); whether it was."""

    @abc.abstractmethod
    async def cache_invalidate(self) -> int:
        """Drop every shared cache entry and return the new cache generation."""

    @abc.abstractmethod
    async def cache_generation(self) -> int:
        """A number that changes on every ``cache_invalidate``, so replicas drop their copies."""

    @abc.abstractmethod
    async def data_id(self, candidate: str) -> str:
        """The id of the data the store holds, which never expires: ``candidate`` becomes it
        when the store holds none (its first use, or it lost its data). A changed answer tells
        the caller the store lost what it held since the last one."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreError`` unless the backend can serve requests now."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""
