"""MetaHub's configuration: one YAML file, validated, with errors that name the bad key.

Environment variables `METAHUB_<KEY>` (nested with `__`) override the file, so a container
deployment can keep secrets out of it.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from metahub.features.matchers import MatcherRegistry
from metahub.features.names import check_login, check_name
from metahub.features.selection import Mode
from metahub.images.documents import FeatureTexts, StrictModel, describe, each, read_yaml
from metahub.images.spec import ImageSpec, check_virtual_images
from metahub.oci.platform import parse_platform
from metahub.oci.reference import is_path_component
from metahub.oci.registries import canonical_registry, is_registry_name, registry_of_url
from metahub.oci.repository_patterns import compile_pattern


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class UpstreamConfig(StrictModel):
    # The registry's name as image references spell it (`docker.io`, `registry.lab:5000`);
    # default: the URL's host[:port]. Requests name it in containerd's `?ns=`.
    registry: str | None = None
    # A first path component that routes to this upstream (`/v2/<prefix>/<repository>/...`);
    # default in `upstreams:`: `registry` when it is a valid path component.
    prefix: str | None = None
    # Requests with no `ns` and no known prefix go here (in `upstreams:`, at most one).
    default: bool = False
    url: str | None = None
    path: Path | None = None
    username: str | None = None
    password: str | None = None
    insecure: bool = False
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    retry_base_delay: float = Field(0.1, ge=0)
    retry_max_delay: float = Field(5.0, ge=0)
    # A body slower than this (bytes/s, averaged over the window) ends with a 504; 0: no floor.
    min_rate: ByteSize = 64 * 1024
    min_rate_window: float = Field(30.0, gt=0)
    # Seconds for a whole manifest, tag list or referrers answer, and for a blob's headers.
    request_timeout: float = Field(60.0, gt=0)
    # Hosts (shell-style patterns, `host` or `host:port`) a redirect may lead to besides the
    # upstream's own origin; None: the storage hosts of the well-known public registries.
    redirect_hosts: tuple[str, ...] | None = None

    @field_validator("registry")
    @classmethod
    def _registry(cls, registry: str | None) -> str | None:
        if registry is None:
            return None
        name = canonical_registry(registry)
        if not is_registry_name(name):
            raise ValueError(
                f"{registry!r} is not a registry name: a host or address with an optional port, "
                "as image references spell it (docker.io, registry.lab:5000)"
            )
        return name

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str | None) -> str | None:
        if prefix is not None and not is_path_component(prefix):
            raise ValueError(
                f"{prefix!r} is not a valid path component: lowercase letters and digits "
                "separated by '.', '_', '__' or '-', no '/' or ':'"
            )
        return prefix

    @model_validator(mode="after")
    def _one_source(self) -> UpstreamConfig:
        if (self.url is None) == (self.path is None):
            raise ValueError("set exactly one of 'url' (a registry) or 'path' (an OCI layout)")
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs 'username'")
        return self

    @property
    def kind(self) -> Literal["registry", "oci-layout"]:
        return "registry" if self.url is not None else "oci-layout"

    @property
    def registry_name(self) -> str | None:
        """`registry`, else the URL's host[:port]; None for an OCI layout that names none."""
        if self.registry is not None:
            return self.registry
        return registry_of_url(self.url) if self.url is not None else None


@dataclass(frozen=True, slots=True)
class ConfiguredUpstream:
    """One upstream as requests are routed to it, its defaults filled in."""

    registry: str
    prefix: str | None
    default: bool
    # From the single `upstream:` key: its repositories keep their unqualified names in the
    # caches and the filtered-digest store, as before `upstreams:` existed.
    legacy: bool
    config: UpstreamConfig


LEGACY_LAYOUT_REGISTRY = "local"


def configured_upstreams(
    upstream: UpstreamConfig | None, upstreams: tuple[UpstreamConfig, ...]
) -> tuple[ConfiguredUpstream, ...]:
    """The upstreams with their defaults; a ValueError naming the key for a bad combination."""
    if upstream is not None and upstreams:
        raise ValueError("set either 'upstream' (one upstream) or 'upstreams' (several), not both")
    if upstream is not None:
        legacy_registry = upstream.registry_name or LEGACY_LAYOUT_REGISTRY
        return (ConfiguredUpstream(legacy_registry, upstream.prefix, True, True, upstream),)
    if not upstreams:
        raise ValueError("set 'upstream' (one upstream) or 'upstreams' (several)")
    entries: list[ConfiguredUpstream] = []
    seen_registries: dict[str, int] = {}
    seen_prefixes: dict[str, int] = {}
    default_at: int | None = None
    for position, config in enumerate(upstreams):
        key = f"upstreams.{position}"
        registry = config.registry_name
        if registry is None:
            raise ValueError(f"{key}.registry: required for an OCI layout ('path')")
        if registry in seen_registries:
            raise ValueError(
                f"{key}.registry: {registry} is also upstreams.{seen_registries[registry]}"
            )
        seen_registries[registry] = position
        prefix = config.prefix
        if prefix is None and is_path_component(registry):
            prefix = registry
        if prefix is not None:
            if prefix in seen_prefixes:
                implied = "" if config.prefix is not None else " (by default: its registry)"
                raise ValueError(
                    f"{key}.prefix: {prefix!r}{implied} is also the prefix of "
                    f"upstreams.{seen_prefixes[prefix]}; give one a 'prefix' of its own"
                )
            seen_prefixes[prefix] = position
        if config.default:
            if default_at is not None:
                raise ValueError(
                    f"{key}.default: upstreams.{default_at} is the default already; "
                    "at most one upstream is the default"
                )
            default_at = position
        entries.append(ConfiguredUpstream(registry, prefix, config.default, False, config))
    return tuple(entries)


class _Login(StrictModel):
    """What machine types and profile-login accounts share: a secret and how to select."""

    password: str | None = None
    password_hash: str | None = None
    mode: Mode = "best"
    platforms: Annotated[tuple[str, ...], each(parse_platform)] = ()
    # `registry/repository` patterns it may pull (oci/repository_patterns.py); none: all.
    repositories: Annotated[tuple[str, ...], each(compile_pattern)] = ()
    description: str = ""

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("set exactly one of 'password' or 'password_hash'")
        if self.password_hash is not None and not self.password_hash.startswith("$argon2"):
            raise ValueError("'password_hash' must be an argon2 hash (metahub hash-password)")
        return self


class MachineTypeConfig(_Login):
    name: Annotated[str, AfterValidator(check_name)]
    login: Annotated[str, AfterValidator(check_login)]
    features: FeatureTexts = ()


class AccountConfig(_Login):
    """An account whose logins carry their own features: `<login>/<key>=<value>,...`."""

    login: Annotated[str, AfterValidator(check_name)]  # the part of its logins before the '/'
    profile_logins: bool = False


class AnonymousConfig(StrictModel):
    machine_type: str | None = None
    unfiltered: bool = False

    @model_validator(mode="after")
    def _one(self) -> AnonymousConfig:
        if (self.machine_type is not None) == self.unfiltered:
            raise ValueError("set exactly one of 'machine_type' or 'unfiltered: true'")
        return self


class FeaturesConfig(StrictModel):
    matchers: dict[str, str] = {}
    aliases: dict[str, dict[str, str]] = {}

    @field_validator("matchers")
    @classmethod
    def _known(cls, matchers: dict[str, str]) -> dict[str, str]:
        MatcherRegistry(matchers)  # raises UnknownMatcher, naming the matchers there are
        return matchers


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_size(value: object) -> int:
    """`64MiB`, `10GB`, `1024` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"invalid size {value!r}: use bytes or a unit, e.g. 512MiB, 10GB")
        amount = float(match.group(1)) * _UNITS[unit]
        if not math.isfinite(amount):
            raise ValueError(f"invalid size {value!r}: too large")
        size = int(amount)
    else:
        raise ValueError(f"invalid size {value!r}: use bytes or a unit, e.g. 512MiB, 10GB")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


ByteSize = Annotated[int, BeforeValidator(parse_size)]


class BlobCacheConfig(StrictModel):
    path: Path
    max_size: ByteSize = parse_size("10GiB")


class BlobsConfig(StrictModel):
    # What to do when the upstream answers a blob GET with a redirect to its storage: `follow`
    # it and relay the bytes, or `pass` it to the client when the target carries none of
    # MetaHub's credentials (then the bytes never cross MetaHub). `pass` needs no blob cache.
    redirect: Literal["follow", "pass"] = "follow"


class CacheConfig(StrictModel):
    tag_ttl: float = Field(60.0, ge=0)
    manifests_max_size: ByteSize = parse_size("64MiB")
    filtered_max_size: ByteSize = parse_size("64MiB")
    blobs: BlobCacheConfig | None = None


class LogConfig(StrictModel):
    access: Literal["plain", "json", "off"] = "plain"
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("access", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class DatabaseConfig(StrictModel):
    url: str | None = None  # default: SQLite in the data directory
    # Bounds how long a revocation or a machine-type change takes to reach every replica and
    # worker; at most 5 s, the longest a revoked credential may still be accepted anywhere.
    refresh_interval: float = Field(2.0, gt=0, le=5)
    # How long a request waits on a locked SQLite database before it is answered 503.
    busy_timeout: float = Field(5.0, ge=0, le=60)
    # Filtered indexes no one was served for this many days are deleted; None keeps them all.
    filtered_retention_days: float | None = Field(None, gt=0)
    # Seconds between the batched writes of when filtered indexes were last served (and the
    # pruning after each); only with a retention.
    last_served_interval: float = Field(300.0, gt=0, le=86400)

    @field_validator("url")
    @classmethod
    def _driver(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB")
        return url


class ServerConfig(StrictModel):
    # Seconds a stopping server waits for requests in flight before it cuts them off.
    shutdown_timeout: int = Field(10, ge=0)
    # Peers whose forwarded headers (client address, scheme, host) are believed.
    trusted_proxies: tuple[str, ...] = ()
    # Open connections one worker holds at most; one more is answered 503. None: no limit.
    max_connections: int | None = Field(None, ge=1)
    # Answer a warm manifest GET/HEAD (Bearer token, everything in memory) in the HTTP protocol
    # layer, without the ASGI round; the answer, metrics and access log are the same.
    fast_path: bool = True

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return entries


class LoginLimitConfig(StrictModel):
    """Failed logins allowed per source address and window, for registry and admin logins."""

    failures: int = Field(10, ge=1)
    window: float = Field(60.0, gt=0)


class AdminConfig(StrictModel):
    """Bearer tokens for the management API: each literal, or `sha256:<hex>` of the token."""

    tokens: tuple[str, ...] = ()

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, tokens: tuple[str, ...]) -> tuple[str, ...]:
        for token in tokens:
            if token.startswith("sha256:") and len(token) != 71:
                raise ValueError("a sha256: token hash needs 64 hex characters")
            if len(token) < 8:
                raise ValueError("an admin token needs at least 8 characters")
        return tokens


class TokenConfig(StrictModel):
    ttl: int = Field(300, ge=60, le=86400)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="METAHUB_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    upstream: UpstreamConfig | None = None  # one upstream, the default: as before `upstreams`
    upstreams: tuple[UpstreamConfig, ...] = ()
    machine_types: tuple[MachineTypeConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()
    images: tuple[ImageSpec, ...] = ()  # virtual images, in manifest-tool's format
    anonymous: AnonymousConfig | None = None
    features: FeaturesConfig = FeaturesConfig()
    token: TokenConfig = TokenConfig()
    admin: AdminConfig = AdminConfig()
    cache: CacheConfig = CacheConfig()
    blobs: BlobsConfig = BlobsConfig()
    log: LogConfig = LogConfig()
    database: DatabaseConfig = DatabaseConfig()
    login_limit: LoginLimitConfig = LoginLimitConfig()
    server: ServerConfig = ServerConfig()
    data_dir: Path = Path("data")
    public_url: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [m.name for m in self.machine_types]
        logins = [m.login for m in self.machine_types]
        for label, values in (("name", names), ("login", logins)):
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"machine_types: duplicate {label} {', '.join(duplicates)}")
        accounts = [a.login for a in self.accounts]
        duplicates = sorted({a for a in accounts if accounts.count(a) > 1})
        if duplicates:
            raise ValueError(f"accounts: duplicate login {', '.join(duplicates)}")
        if self.anonymous and self.anonymous.machine_type not in (None, *names):
            raise ValueError(
                f"anonymous.machine_type {self.anonymous.machine_type!r} is not a machine type"
            )
        return self

    @model_validator(mode="after")
    def _upstreams(self) -> Settings:
        configured_upstreams(self.upstream, self.upstreams)
        return self

    @property
    def configured_upstreams(self) -> tuple[ConfiguredUpstream, ...]:
        return configured_upstreams(self.upstream, self.upstreams)

    @property
    def default_upstream(self) -> ConfiguredUpstream | None:
        return next((entry for entry in self.configured_upstreams if entry.default), None)

    @model_validator(mode="after")
    def _blob_path(self) -> Settings:
        if self.blobs.redirect == "pass" and self.cache.blobs is not None:
            raise ValueError(
                "blobs.redirect: pass and cache.blobs exclude each other: the cache keeps every "
                "blob here, passing redirects sends clients to the upstream's storage; "
                "drop one of them"
            )
        return self

    @model_validator(mode="after")
    def _virtual_images(self) -> Settings:
        if not self.images:
            return self
        default = self.default_upstream
        if default is None:
            raise ValueError(
                "images: virtual images are made from the default upstream; "
                "mark one of 'upstreams' with 'default: true'"
            )
        check_virtual_images(self.images, default.config.url)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


def load_config(path: Path) -> Settings:
    raw = read_yaml(path, "config", ConfigError) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    settings = parse_config(raw, source=str(path))
    return _relative_to(settings, path.parent)


def parse_config(raw: dict[str, Any], *, source: str = "config") -> Settings:
    # Keys become keyword arguments: a non-string one is a TypeError, and one starting with '_'
    # (`_env_file`, `_secrets_dir`, `_cli_parse_args`...) would configure pydantic-settings
    # itself rather than be refused as an unknown key.
    odd = [key for key in raw if not isinstance(key, str) or key.startswith("_")]
    if odd:
        lines = [f"invalid {source}:", *(f"  {key}: unknown key" for key in odd)]
        raise ConfigError("\n".join(lines))
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source)) from exc


def _relative_to(settings: Settings, base: Path) -> Settings:
    """Paths in a config file are relative to the file, not to the working directory."""
    updates: dict[str, Any] = {}
    if not settings.data_dir.is_absolute():
        updates["data_dir"] = base / settings.data_dir
    blobs = settings.cache.blobs
    if blobs is not None and not blobs.path.is_absolute():
        updates["cache"] = settings.cache.model_copy(
            update={"blobs": blobs.model_copy(update={"path": base / blobs.path})}
        )
    if settings.upstream is not None:
        updates["upstream"] = _layout_relative_to(settings.upstream, base)
    if settings.upstreams:
        updates["upstreams"] = tuple(_layout_relative_to(u, base) for u in settings.upstreams)
    return settings.model_copy(update=updates) if updates else settings


def _layout_relative_to(upstream: UpstreamConfig, base: Path) -> UpstreamConfig:
    if upstream.path is None or upstream.path.is_absolute():
        return upstream
    return upstream.model_copy(update={"path": base / upstream.path})
