"""The tenants file: who may call the gateway, with which keys and models, within which limits.

The YAML file (DESIGN §8) is the source of truth. It is validated as a whole: every problem is
reported with a path naming the tenant and the field, so an operator fixes a bad file in one go.
Keys are known only by their SHA-256; authentication hashes the presented key and looks the hash
up in a dict, so there is no per-key comparison loop to time. Problems never quote a ``sha256``
value, a YAML source line or anything holding the key prefix, since an operator may have pasted a
key where its hash or an id belongs; an id that looks like a key is refused, so a key never
reaches audit records, metric labels or ``/admin/tenants``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from types import MappingProxyType
from typing import Any, NoReturn

import yaml

from gateway.errors import ExpiredKey, Unauthorized

__all__ = (
    "LIMIT_NAMES",
    "TENANT_ID_RULE",
    "Admin",
    "Limits",
    "Principal",
    "Tenant",
    "TenantConfigError",
    "TenantKey",
    "TenantsConfig",
    "hash_key",
    "is_tenant_id",
    "load_tenants",
    "new_key",
    "parse_tenants",
)

LIMIT_NAMES = (
    "submits_per_minute",
    "reads_per_minute",
    "max_concurrent_jobs",
    "video_seconds_per_day",
    "video_seconds_per_month",
)
KEY_PREFIX = "gmigw_"
# Limits end up as Lua numbers (doubles) in the store: keep them exactly representable.
_MAX_LIMIT = 2**53 - 1
# The exact GCRA (store/limits.py) holds rates below its TAT_SCALE, 10 million a minute; a
# million a minute is beyond any real tenant.
_MAX_RATE = 1_000_000
_RATE_NAMES = ("submits_per_minute", "reads_per_minute")
# A DNS label: tenant ids become Redis hash tags, metric labels and Kubernetes-friendly names.
_TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
TENANT_ID_RULE = "1-63 characters of [a-z0-9-], starting and ending with a letter or digit"
_KEY_ID_RULE = "1-128 characters of [A-Za-z0-9._-]"
_KEYS_RULE = "keys: required, a list of {id, sha256} entries ([] refuses every request)"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)
_TOP_FIELDS = ("tenants", "admins", "model_weights")
_MAX_WEIGHT = 1000
_NO_WEIGHTS: Mapping[str, Fraction] = MappingProxyType({})
_TENANT_FIELDS = ("id", "keys", "models", "limits", "audit")
_KEY_FIELDS = ("id", "sha256", "expires_at")
_ADMIN_FIELDS = ("id", "sha256")
_AUDIT_FIELDS = ("store_prompts",)
_EMPTY_KEY_HASH = hashlib.sha256(b"").hexdigest()
_INVALID_KEY = "unauthorized: invalid or expired API key"
_LOOKS_LIKE_KEY = "looks like a key (not shown): store only its sha256 (gmi-gateway keys new)"


class TenantConfigError(Exception):
    """The tenants file is invalid; ``problems`` lists every problem found, one per entry."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-tenant limits (DESIGN §4); ``None`` means unlimited."""

    submits_per_minute: int | None = None
    reads_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    video_seconds_per_day: int | None = None
    video_seconds_per_month: int | None = None


@dataclass(frozen=True, slots=True)
class TenantKey:
    """One key of a tenant, known only by its hash; ``id`` is what audit and metrics show."""

    id: str
    sha256: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    """A frontend calling the gateway: its keys, the models it may use, its limits."""

    id: str
    keys: tuple[TenantKey, ...]
    models: frozenset[str] | None  # None: every model ("*")
    limits: Limits
    store_prompts: bool = False
    # The file's table, shared by every tenant (a factory: dataclasses refuse a mapping default).
    model_weights: Mapping[str, Fraction] = field(default_factory=lambda: _NO_WEIGHTS)

    def allows_model(self, model_id: str) -> bool:
        """Whether this tenant may see and use ``model_id`` (ids compare case-sensitively)."""
        return self.models is None or model_id in self.models

    def video_cost(self, model_id: str, seconds: int) -> int:
        """What ``seconds`` of ``model_id`` take from the video budgets: the seconds times the
        model's weight (1 unless ``model_weights`` says otherwise), rounded up."""
        weight = self.model_weights.get(model_id)
        return seconds if weight is None else math.ceil(seconds * weight)


@dataclass(frozen=True, slots=True)
class Admin:
    """An operator key for the ``/admin`` routes; never valid on tenant routes."""

    id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated tenant request: the tenant and which of its keys was used."""

    tenant: Tenant
    key_id: str


class TenantsConfig:
    """A validated tenants file; immutable once built, so readers never need a lock."""

    __slots__ = ("_admins", "_admins_by_hash", "_by_hash", "_digest", "_tenants")

    def __init__(
        self, tenants: Mapping[str, Tenant], admins: Mapping[str, Admin], digest: str
    ) -> None:
        self._tenants: Mapping[str, Tenant] = MappingProxyType(dict(tenants))
        self._admins: Mapping[str, Admin] = MappingProxyType(dict(admins))
        self._digest = digest
        self._by_hash: Mapping[str, tuple[Tenant, TenantKey]] = MappingProxyType(
            {key.sha256: (tenant, key) for tenant in tenants.values() for key in tenant.keys}
        )
        self._admins_by_hash: Mapping[str, Admin] = MappingProxyType(
            {admin.sha256: admin for admin in admins.values()}
        )

    @property
    def tenants(self) -> Mapping[str, Tenant]:
        """Tenants by id, in file order."""
        return self._tenants

    @property
    def admins(self) -> Mapping[str, Admin]:
        """Admins by id, in file order."""
        return self._admins

    @property
    def digest(self) -> str:
        """SHA-256 of the file text: equal digests mean nothing changed."""
        return self._digest

    def authenticate(self, presented_key: str, now: datetime) -> Principal:
        """The tenant a key belongs to.

        Args:
            presented_key: the key from the request, as sent.
            now: the current time, timezone-aware (time is an argument, for tests).

        Raises:
            Unauthorized: unknown key (admin keys included), or a key at or past ``expires_at``.
        """
        found = self._by_hash.get(hash_key(presented_key)) if presented_key else None
        if found is None:
            raise Unauthorized(_INVALID_KEY)
        tenant, key = found
        if key.expires_at is not None and now >= key.expires_at:
            raise ExpiredKey(tenant.id, key.id)
        return Principal(tenant, key.id)

    def authenticate_admin(self, presented_key: str) -> Admin:
        """The admin a key belongs to; tenant keys are not admin keys.

        Raises:
            Unauthorized: not an admin key.
        """
        admin = self._admins_by_hash.get(hash_key(presented_key)) if presented_key else None
        if admin is None:
            raise Unauthorized(_INVALID_KEY)
        return admin

    def __repr__(self) -> str:
        return (
            f"TenantsConfig(tenants={list(self._tenants)}, admins={list(self._admins)},"
            f" digest={self._digest[:12]!r})"
        )


def hash_key(key: str) -> str:
    """Lowercase hex SHA-256 of a key, the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def is_tenant_id(value: str) -> bool:
    """Whether ``value`` is a valid tenant id (configured or not)."""
    return _TENANT_ID.fullmatch(value) is not None


def new_key(tenant_id: str) -> tuple[str, str]:
    """A fresh key for ``tenant_id`` and the YAML entry to paste under the tenant's ``keys:``.

    The key carries 256 random bits; its id gets a random suffix so it is unique in the file.

    Raises:
        ValueError: ``tenant_id`` is not a valid tenant id.
    """
    if not is_tenant_id(tenant_id):
        raise ValueError(f"tenant id {_shown(tenant_id)} must match {TENANT_ID_RULE}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = f"{tenant_id}-{secrets.token_hex(4)}"
    entry = f'- id: {key_id}\n  sha256: "{hash_key(key)}"'
    return key, entry


def load_tenants(path: str | os.PathLike[str]) -> TenantsConfig:
    """Read and validate a tenants file.

    Raises:
        TenantConfigError: unreadable or invalid; every problem is listed.
    """
    return parse_tenants(read_tenants_text(path), source=os.fspath(path))


def read_tenants_text(path: str | os.PathLike[str]) -> str:
    """The file's text, read once (so the digest and the parse see the same bytes).

    Raises:
        TenantConfigError: missing, unreadable, or not UTF-8.
    """
    where = os.fspath(path)
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # newline="": digest the bytes
            return handle.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TenantConfigError([f"{where}: cannot read: {reason}"]) from None
    except UnicodeDecodeError as exc:
        raise TenantConfigError([f"{where}: not UTF-8 text (byte {exc.start})"]) from None


def parse_tenants(text: str, *, source: str = "<tenants>") -> TenantsConfig:
    """Validate tenants-file text.

    Raises:
        TenantConfigError: every problem, each naming the tenant and the field.
    """
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # Only the problem, never str(exc): that quotes the source line, which may hold a key.
        detail = f": {exc.problem}" if exc.problem else ""
        raise TenantConfigError([f"{source}: not valid YAML{where}{detail}"]) from None
    except yaml.YAMLError as exc:
        raise TenantConfigError([f"{source}: not valid YAML ({type(exc).__name__})"]) from None
    return _Parser(source).document(document, hash_key(text))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys, which PyYAML would silently overwrite.

    Timestamps stay text, validated (and named by field) in ``expires_at``; any other value a
    tag cannot hold (``!!int abc``) is a YAML error with a line, never a bare ``ValueError``.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, AttributeError):  # PyYAML's scalar constructors leak these
            tag = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {tag} value", node.start_mark
            ) from None


def _construct_text(loader: _StrictLoader, node: yaml.ScalarNode) -> str:
    return loader.construct_scalar(node)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:  # before merge keys (<<) are flattened: overrides are fine
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if isinstance(key, list | dict):  # unhashable; the validator reports it by name
            continue
        if key in seen:
            _duplicate(key_node, key)
        seen.add(key)
    return loader.construct_mapping(node)


def _duplicate(node: yaml.Node, key: object) -> NoReturn:
    raise yaml.constructor.ConstructorError(
        None, None, f"duplicate key {_shown(key)}", node.start_mark
    )


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)


def _looks_like_key(value: str) -> bool:
    """Whether ``value`` holds a gateway key (``new_key`` output), pasted where it never belongs."""
    return KEY_PREFIX in value


def _shown(value: object) -> str:
    """A short repr for a problem message; never one that holds a key, even in part."""
    text = repr(value)
    if _looks_like_key(text):
        return "a value that looks like a key (not shown)"
    return text if len(text) <= 40 else text[:37] + "..."


def _shown_id(value: object) -> str:
    """Like ``_shown``, but says why an unquoted ``0123`` or ``yes`` is not the id it looks like."""
    if isinstance(value, bool | int | float):
        kind = "boolean" if isinstance(value, bool) else "number"
        return f"{value!r}, which YAML read as a {kind}: put the id in quotes"
    return _shown(value)


class _Parser:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.ids: dict[str, str] = {}  # key and admin ids -> where first seen
        self.hashes: dict[str, str] = {}  # sha256 -> where first seen
        self.weights: Mapping[str, Fraction] = _NO_WEIGHTS

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def unknown(self, where: str, raw: dict[Any, Any], known: tuple[str, ...]) -> None:
        for name in sorted(set(raw) - set(known), key=str):
            self.problem(where, f"unknown field {_shown(name)} (known: {', '.join(known)})")

    def document(self, document: Any, digest: str) -> TenantsConfig:
        if not isinstance(document, dict):
            shown = "the file is empty" if document is None else f"got a {type(document).__name__}"
            raise TenantConfigError(
                [f"{self.source}: must be a mapping with a 'tenants' list ({shown})"]
            )
        self.unknown(self.source, document, _TOP_FIELDS)
        self.weights = self.model_weights(document.get("model_weights"))
        raw_tenants = document.get("tenants")
        if not isinstance(raw_tenants, list):
            self.problem(self.source, "tenants: required, a list (it may be empty: [])")
            raw_tenants = []
        tenants: dict[str, Tenant] = {}
        for index, raw in enumerate(raw_tenants):
            tenant = self.tenant(index, raw)
            if tenant is None:
                continue
            if tenant.id in tenants:
                self.problem(f"tenants[{index}] ({tenant.id})", "id: duplicate tenant id")
            else:
                tenants[tenant.id] = tenant
        raw_admins = document.get("admins")
        if raw_admins is None:
            raw_admins = []
        elif not isinstance(raw_admins, list):
            self.problem(self.source, f"admins: must be a list, got {_shown(raw_admins)}")
            raw_admins = []
        admins: dict[str, Admin] = {}
        for index, raw in enumerate(raw_admins):
            admin = self.admin(index, raw)
            if admin is not None:
                admins.setdefault(admin.id, admin)
        if self.problems:
            raise TenantConfigError(self.problems)
        return TenantsConfig(tenants, admins, digest)

    def tenant(self, index: int, raw: Any) -> Tenant | None:
        where = f"tenants[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, f"must be a mapping, got {_shown(raw)}")
            return None
        tenant_id = raw.get("id")
        if tenant_id is None:
            self.problem(where, "id: required")
            tenant_id = ""
        elif isinstance(tenant_id, str) and _looks_like_key(tenant_id):
            self.problem(where, f"id: {_LOOKS_LIKE_KEY}")
            tenant_id = ""
        elif not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
            self.problem(where, f"id: must be {TENANT_ID_RULE}, got {_shown_id(tenant_id)}")
            tenant_id = ""
        else:
            where = f"{where} ({tenant_id})"
        self.unknown(where, raw, _TENANT_FIELDS)
        keys = self.keys(where, raw.get("keys"))
        models = self.models(where, raw.get("models"))
        limits = self.limits(where, raw.get("limits"))
        store_prompts = self.audit(where, raw.get("audit"))
        if not tenant_id:
            return None
        return Tenant(tenant_id, keys, models, limits, store_prompts, self.weights)

    def keys(self, where: str, raw: Any) -> tuple[TenantKey, ...]:
        # An empty list is a tenant with every key revoked: deleting a leaked last key must work.
        if not isinstance(raw, list):
            self.problem(where, _KEYS_RULE)
            return ()
        keys = []
        for index, entry in enumerate(raw):
            at = f"{where}: keys[{index}]"
            if not isinstance(entry, dict):
                self.problem(at, "must be a mapping with id and sha256")
                continue
            key_id, at = self.entry_id(at, entry.get("id"))
            self.unknown(at, entry, _KEY_FIELDS)
            digest = self.digest(at, entry.get("sha256"))
            expires = self.expiry(at, entry.get("expires_at"))
            keys.append(TenantKey(key_id, digest, expires))
        return tuple(keys)

    def entry_id(self, at: str, raw: Any) -> tuple[str, str]:
        """A key or admin id and its label; unique across the file, so audit is unambiguous."""
        if raw is None:
            self.problem(at, "id: required")
            return "", at
        if isinstance(raw, str) and _looks_like_key(raw):
            self.problem(at, f"id: {_LOOKS_LIKE_KEY}")
            return "", at
        if not isinstance(raw, str) or not _KEY_ID.fullmatch(raw):
            self.problem(at, f"id: must be {_KEY_ID_RULE}, got {_shown_id(raw)}")
            return "", at
        at = f"{at} ({raw})"
        if raw in self.ids:
            self.problem(at, f"id: {raw!r} is already used by {self.ids[raw]}")
        else:
            self.ids[raw] = at
        return raw, at

    def digest(self, at: str, raw: Any) -> str:
        if raw is None:
            self.problem(at, "sha256: required (the SHA-256 of the key, 64 hex characters)")
            return ""
        if not isinstance(raw, str) or not _SHA256.fullmatch(raw):
            # Never quote the value: it may be the key itself, pasted in the wrong place.
            got = f"{len(raw)} characters" if isinstance(raw, str) else type(raw).__name__
            hint = (
                "; this looks like a key itself: store only its hash (gmi-gateway keys new)"
                if isinstance(raw, str) and _looks_like_key(raw)
                else ""
            )
            self.problem(at, f"sha256: must be 64 hex characters, got {got}{hint}")
            return ""
        digest = raw.lower()
        if digest == _EMPTY_KEY_HASH:
            self.problem(at, "sha256: is the hash of an empty key")
        if digest in self.hashes:
            self.problem(at, f"sha256: the same key is already used by {self.hashes[digest]}")
        else:
            self.hashes[digest] = at
        return digest

    def expiry(self, at: str, raw: Any) -> datetime | None:
        if raw is None:
            return None
        example = 'an RFC 3339 time with a timezone, e.g. "2027-06-01T00:00:00Z"'
        if not isinstance(raw, str):  # the loader keeps unquoted timestamps as text too
            self.problem(at, f"expires_at: must be {example}, got {type(raw).__name__}")
            return None
        match = _RFC3339.fullmatch(raw.strip())
        if match is None:
            self.problem(at, f"expires_at: must be {example}, got {_shown(raw)}")
            return None
        if match["zone"] is None:
            self.problem(at, f"expires_at: needs a timezone: {example}")
            return None
        try:
            moment = datetime.fromisoformat(raw.strip().upper().replace("Z", "+00:00"))
            return moment.astimezone(UTC)
        except ValueError:
            self.problem(at, f"expires_at: not a valid date/time, got {_shown(raw)}")
        except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00 is in the year 10000 in UTC
            self.problem(at, f"expires_at: out of range once in UTC, got {_shown(raw)}")
        return None

    def models(self, where: str, raw: Any) -> frozenset[str] | None:
        expected = 'a non-empty list of model ids, or ["*"] for every model'
        if raw is None or raw == []:
            self.problem(where, f"models: required, {expected}")
            return frozenset()
        if not isinstance(raw, list):
            self.problem(where, f"models: must be {expected}, got {_shown(raw)}")
            return frozenset()
        ok = True
        for index, model in enumerate(raw):
            if not isinstance(model, str) or not model.strip() or model != model.strip():
                self.problem(
                    where,
                    f"models[{index}]: must be a model id without surrounding spaces,"
                    f" got {_shown(model)}",
                )
                ok = False
        if ok and "*" in raw:
            if len(raw) > 1:
                self.problem(where, 'models: "*" means every model and cannot be mixed with ids')
            return None
        return frozenset(m for m in raw if isinstance(m, str))

    def model_weights(self, raw: Any) -> Mapping[str, Fraction]:
        """``{model id: weight}``: a model's video seconds cost that many budget seconds."""
        if raw is None:
            return _NO_WEIGHTS
        if not isinstance(raw, dict):
            self.problem(self.source, f"model_weights: must be a mapping, got {_shown(raw)}")
            return _NO_WEIGHTS
        weights: dict[str, Fraction] = {}
        for model, value in raw.items():
            where = f"model_weights.{_shown(model)}"
            if not isinstance(model, str) or not model:
                self.problem(self.source, f"{where}: a model id must be a non-empty string")
            elif (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= _MAX_WEIGHT
            ):
                message = f"must be a number above 0 and at most {_MAX_WEIGHT}, got {_shown(value)}"
                self.problem(self.source, f"{where}: {message}")
            else:
                weights[model] = Fraction(str(value))  # 0.3 is 3/10, not 0.299999…
        return MappingProxyType(weights)

    def limits(self, where: str, raw: Any) -> Limits:
        if raw is None:
            return Limits()
        if not isinstance(raw, dict):
            self.problem(where, f"limits: must be a mapping, got {_shown(raw)}")
            return Limits()
        for name in sorted(set(raw) - set(LIMIT_NAMES), key=str):
            self.problem(
                where, f"limits: unknown limit {_shown(name)} (known: {', '.join(LIMIT_NAMES)})"
            )
        values: dict[str, int | None] = {}
        for name in LIMIT_NAMES:
            value = raw.get(name)
            cap = _MAX_RATE if name in _RATE_NAMES else _MAX_LIMIT
            if value is None:  # absent or null: unlimited
                values[name] = None
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.problem(
                    where, f"limits.{name}: must be a positive integer, got {_shown(value)}"
                )
                values[name] = None
            elif value > cap:
                self.problem(where, f"limits.{name}: must be at most {cap}, got {value}")
                values[name] = None
            else:
                values[name] = value
        return Limits(**values)

    def audit(self, where: str, raw: Any) -> bool:
        if raw is None:
            return False
        if not isinstance(raw, dict):
            self.problem(where, f"audit: must be a mapping, got {_shown(raw)}")
            return False
        self.unknown(f"{where}: audit", raw, _AUDIT_FIELDS)
        value = raw.get("store_prompts", False)
        if not isinstance(value, bool):
            self.problem(where, f"audit.store_prompts: must be true or false, got {_shown(value)}")
            return False
        return value

    def admin(self, index: int, raw: Any) -> Admin | None:
        where = f"admins[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping with id and sha256")
            return None
        admin_id, where = self.entry_id(where, raw.get("id"))
        self.unknown(where, raw, _ADMIN_FIELDS)
        digest = self.digest(where, raw.get("sha256"))
        return Admin(admin_id, digest) if admin_id else None
