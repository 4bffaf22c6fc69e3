"""The tenants file: who may call the gateway, with which keys and models, within which limits.

The YAML file (DESIGN §8) is the source of truth. It is validated as a whole: every problem is
reported with a path naming the tenant and the field, so an operator fixes a bad file in one go.
Keys are known only by their SHA-256; authentication hashes the presented key and looks the hash
up in a dict, so there is no per-key comparison loop to time.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from gateway.errors import Unauthorized

__all__ = (
    "Admin",
    "Limits",
    "Principal",
    "Tenant",
    "TenantConfigError",
    "TenantKey",
    "TenantsConfig",
    "hash_key",
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
_TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TENANT_FIELDS = frozenset({"id", "keys", "models", "limits", "audit"})
_KEY_FIELDS = frozenset({"id", "sha256", "expires_at"})
_ADMIN_FIELDS = frozenset({"id", "sha256"})
_INVALID_KEY = "unauthorized: invalid or expired API key"


class TenantConfigError(Exception):
    """The tenants file is invalid; ``problems`` lists every problem found, one per entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-tenant limits; ``None`` means unlimited."""

    submits_per_minute: int | None = None
    reads_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    video_seconds_per_day: int | None = None
    video_seconds_per_month: int | None = None


@dataclass(frozen=True, slots=True)
class TenantKey:
    id: str
    sha256: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    keys: tuple[TenantKey, ...]
    models: frozenset[str] | None  # None: every model ("*")
    limits: Limits
    store_prompts: bool = False

    def allows_model(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


@dataclass(frozen=True, slots=True)
class Admin:
    id: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated tenant request: the tenant and which of its keys was used."""

    tenant: Tenant
    key_id: str


class TenantsConfig:
    """A validated tenants file; immutable once built."""

    def __init__(
        self, tenants: Mapping[str, Tenant], admins: Mapping[str, Admin], digest: str
    ) -> None:
        self.tenants: Mapping[str, Tenant] = dict(tenants)
        self.admins: Mapping[str, Admin] = dict(admins)
        self.digest = digest
        self._by_hash = {
            key.sha256: (tenant, key) for tenant in self.tenants.values() for key in tenant.keys
        }
        self._admins_by_hash = {admin.sha256: admin for admin in self.admins.values()}

    def authenticate(self, presented_key: str, now: datetime) -> Principal:
        """The tenant a key belongs to.

        Raises:
            Unauthorized: unknown key, or a key past its ``expires_at``.
        """
        found = self._by_hash.get(hash_key(presented_key))
        if found is None:
            raise Unauthorized(_INVALID_KEY)
        tenant, key = found
        if key.expires_at is not None and now >= key.expires_at:
            raise Unauthorized(f"unauthorized: API key {key.id} expired")
        return Principal(tenant, key.id)

    def authenticate_admin(self, presented_key: str) -> Admin:
        """The admin a key belongs to; tenant keys are not admin keys.

        Raises:
            Unauthorized: not an admin key.
        """
        admin = self._admins_by_hash.get(hash_key(presented_key))
        if admin is None:
            raise Unauthorized(_INVALID_KEY)
        return admin


def hash_key(key: str) -> str:
    """Lowercase hex SHA-256 of a key, the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(tenant_id: str) -> tuple[str, str]:
    """A fresh high-entropy key for ``tenant_id`` and the YAML key entry to paste under ``keys:``.

    Raises:
        ValueError: ``tenant_id`` is not a valid tenant id.
    """
    if not _TENANT_ID.fullmatch(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} must match [a-z0-9-] (at most 63 characters)")
    key = "gmigw_" + secrets.token_urlsafe(32)
    key_id = f"{tenant_id}-{secrets.token_hex(3)}"
    entry = f'- id: {key_id}\n  sha256: "{hash_key(key)}"'
    return key, entry


def load_tenants(path: str | os.PathLike[str]) -> TenantsConfig:
    """Read and validate a tenants file.

    Raises:
        TenantConfigError: unreadable or invalid; every problem is listed.
    """
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # keep bytes for the digest
            text = handle.read()
    except OSError as exc:
        raise TenantConfigError([f"{os.fspath(path)}: cannot read: {exc.strerror}"]) from None
    return parse_tenants(text, source=os.fspath(path))


def parse_tenants(text: str, *, source: str = "<tenants>") -> TenantsConfig:
    """Validate tenants-file text.

    Raises:
        TenantConfigError: every problem, each naming the tenant and the field.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TenantConfigError([f"{source}: not valid YAML{where}"]) from None
    return _Parser(source).document(document, hash_key(text))


class _Parser:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.key_ids: set[str] = set()
        self.hashes: dict[str, str] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def document(self, document: Any, digest: str) -> TenantsConfig:
        if not isinstance(document, dict):
            raise TenantConfigError([f"{self.source}: must be a mapping with a 'tenants' list"])
        for unknown in sorted(set(document) - {"tenants", "admins"}, key=str):
            self.problem(self.source, f"unknown top-level key {unknown!r}")
        raw_tenants = document.get("tenants")
        if not isinstance(raw_tenants, list):
            self.problem(self.source, "'tenants' must be a list (it may be empty: [])")
            raw_tenants = []
        tenants: dict[str, Tenant] = {}
        for index, raw in enumerate(raw_tenants):
            tenant = self.tenant(index, raw)
            if tenant is None:
                continue
            if tenant.id in tenants:
                self.problem(f"tenants[{index}] ({tenant.id})", "id: duplicate tenant id")
            tenants[tenant.id] = tenant
        admins: dict[str, Admin] = {}
        raw_admins = document.get("admins") or []
        if not isinstance(raw_admins, list):
            self.problem(self.source, "'admins' must be a list")
            raw_admins = []
        for index, raw in enumerate(raw_admins):
            admin = self.admin(index, raw)
            if admin is not None:
                if admin.id in admins:
                    self.problem(f"admins[{index}] ({admin.id})", "id: duplicate admin id")
                admins[admin.id] = admin
        if self.problems:
            raise TenantConfigError(self.problems)
        return TenantsConfig(tenants, admins, digest)

    def tenant(self, index: int, raw: Any) -> Tenant | None:
        where = f"tenants[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping")
            return None
        tenant_id = raw.get("id")
        if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
            self.problem(where, "id: required, [a-z0-9-] (at most 63 characters)")
            tenant_id = f"#{index}"
        where = f"{where} ({tenant_id})"
        for unknown in sorted(set(raw) - _TENANT_FIELDS, key=str):
            self.problem(where, f"unknown field {unknown!r}")
        keys = self.keys(where, raw.get("keys"))
        models = self.models(where, raw.get("models"))
        limits = self.limits(where, raw.get("limits"))
        store_prompts = self.audit(where, raw.get("audit"))
        return Tenant(tenant_id, keys, models, limits, store_prompts)

    def keys(self, where: str, raw: Any) -> tuple[TenantKey, ...]:
        if not isinstance(raw, list) or not raw:
            self.problem(where, "keys: required, a non-empty list")
            return ()
        keys = []
        for index, entry in enumerate(raw):
            at = f"{where}: keys[{index}]"
            if not isinstance(entry, dict):
                self.problem(at, "must be a mapping with id and sha256")
                continue
            for unknown in sorted(set(entry) - _KEY_FIELDS, key=str):
                self.problem(at, f"unknown field {unknown!r}")
            key_id = self.key_id(at, entry.get("id"))
            digest = self.digest(at, key_id, entry.get("sha256"))
            expires = self.expiry(at, entry.get("expires_at"))
            keys.append(TenantKey(key_id, digest, expires))
        return tuple(keys)

    def key_id(self, at: str, raw: Any) -> str:
        if not isinstance(raw, str) or not _KEY_ID.fullmatch(raw):
            self.problem(at, "id: required, [A-Za-z0-9._-]")
            return ""
        if raw in self.key_ids:
            self.problem(at, f"id: key id {raw!r} is used twice in the file")
        self.key_ids.add(raw)
        return raw

    def digest(self, at: str, owner: str, raw: Any) -> str:
        if not isinstance(raw, str) or not _SHA256.fullmatch(raw):
            self.problem(at, "sha256: required, 64 hex characters (the SHA-256 of the key)")
            return ""
        digest = raw.lower()
        if digest in self.hashes:
            self.problem(at, f"sha256: the same key is already used by {self.hashes[digest]}")
        self.hashes[digest] = owner
        return digest

    def expiry(self, at: str, raw: Any) -> datetime | None:
        if raw is None:
            return None
        if isinstance(raw, datetime):
            moment = raw
        elif isinstance(raw, str):
            try:
                moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                self.problem(at, f"expires_at: not an RFC 3339 time: {raw!r}")
                return None
        else:
            self.problem(at, "expires_at: must be an RFC 3339 time like 2027-06-01T00:00:00Z")
            return None
        if moment.tzinfo is None:
            self.problem(at, "expires_at: needs a timezone (e.g. a trailing Z for UTC)")
            return None
        return moment

    def models(self, where: str, raw: Any) -> frozenset[str] | None:
        if not isinstance(raw, list) or not raw:
            self.problem(where, 'models: required, a non-empty list of model ids or ["*"]')
            return frozenset()
        if not all(isinstance(m, str) and m for m in raw):
            self.problem(where, "models: every entry must be a non-empty string")
            return frozenset()
        if "*" in raw:
            if len(raw) > 1:
                self.problem(where, 'models: "*" means every model and cannot be mixed with ids')
            return None
        return frozenset(raw)

    def limits(self, where: str, raw: Any) -> Limits:
        if raw is None:
            return Limits()
        if not isinstance(raw, dict):
            self.problem(where, "limits: must be a mapping")
            return Limits()
        for unknown in sorted(set(raw) - set(LIMIT_NAMES), key=str):
            self.problem(
                where, f"limits: unknown limit {unknown!r} (known: {', '.join(LIMIT_NAMES)})"
            )
        values: dict[str, int | None] = {}
        for name in LIMIT_NAMES:
            value = raw.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                self.problem(where, f"limits.{name}: must be a positive integer, got {value!r}")
                value = None
            values[name] = value
        return Limits(**values)

    def audit(self, where: str, raw: Any) -> bool:
        if raw is None:
            return False
        if not isinstance(raw, dict) or set(raw) - {"store_prompts"}:
            self.problem(where, "audit: only 'store_prompts' (true or false) is allowed")
            return False
        value = raw.get("store_prompts", False)
        if not isinstance(value, bool):
            self.problem(where, f"audit.store_prompts: must be true or false, got {value!r}")
            return False
        return value

    def admin(self, index: int, raw: Any) -> Admin | None:
        where = f"admins[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping with id and sha256")
            return None
        admin_id = raw.get("id")
        if not isinstance(admin_id, str) or not _KEY_ID.fullmatch(admin_id):
            self.problem(where, "id: required, [A-Za-z0-9._-]")
            admin_id = f"#{index}"
        where = f"{where} ({admin_id})"
        for unknown in sorted(set(raw) - _ADMIN_FIELDS, key=str):
            self.problem(where, f"unknown field {unknown!r}")
        return Admin(admin_id, self.digest(where, f"admin {admin_id}", raw.get("sha256")))
