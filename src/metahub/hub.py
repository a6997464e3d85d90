"""Everything a running MetaHub holds, built once from the settings at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from metahub.auth.passwords import CredentialChecker
from metahub.auth.profile_logins import ProfileLogins
from metahub.auth.profiles import MachineProfiles
from metahub.auth.ratelimit import FailureLimiter
from metahub.auth.tokens import TokenService
from metahub.client.retry import RetryPolicy
from metahub.config import ConfiguredUpstream, Settings
from metahub.features.selection import Matchers
from metahub.management.directory import Directory
from metahub.management.service import ManagementService
from metahub.serving.blobcache import BlobCache
from metahub.serving.blobs import BlobService
from metahub.serving.manifests import ManifestService
from metahub.store.database import open_engine
from metahub.store.digests import FilteredDigestStore
from metahub.store.files import secure_data_dir
from metahub.store.keys import signing_key
from metahub.upstream.base import Upstream
from metahub.upstream.caching import CachingUpstream
from metahub.upstream.layout import OciLayoutUpstream
from metahub.upstream.registry import RegistryUpstream
from metahub.upstream.routed import RoutedUpstream
from metahub.upstream.routing import Router
from metahub.upstream.virtual import with_virtual_images


def make_upstream(configured: ConfiguredUpstream) -> Upstream:
    config = configured.config
    if config.url is not None:
        return RegistryUpstream(
            config.url,
            username=config.username,
            password=config.password,
            insecure=config.insecure,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retry=RetryPolicy(config.retries, config.retry_base_delay, config.retry_max_delay),
            min_rate=config.min_rate,
            min_rate_window=config.min_rate_window,
            request_timeout=config.request_timeout,
            redirect_hosts=config.redirect_hosts,
            registry=configured.registry,
            # A single `upstream:` keeps its messages; one of several names its registry.
            named=not configured.legacy,
        )
    assert config.path is not None
    return OciLayoutUpstream(
        config.path, registry=None if configured.legacy else configured.registry
    )


def make_routed_upstream(settings: Settings, router: Router) -> RoutedUpstream:
    """One Upstream per configured registry behind the router; virtual images (`images:`) are
    made from, and served as part of, the default upstream."""
    upstreams: dict[str, Upstream] = {}
    for configured in router.upstreams:
        upstream = make_upstream(configured)
        if configured.default:
            # Requests reach one of several upstreams by its registry's own repository names
            # (`library/` added on docker.io); the single `upstream:` by names as sent.
            registry = None if configured.legacy else configured.registry
            upstream = with_virtual_images(upstream, settings.images, registry)
        upstreams[configured.registry] = upstream
    return RoutedUpstream(router, upstreams)


def cached(upstream: Upstream, settings: Settings) -> CachingUpstream:
    return CachingUpstream(
        upstream,
        tag_ttl=settings.cache.tag_ttl,
        content_bytes=settings.cache.manifests_max_size,
    )


@dataclass(slots=True)
class Hub:
    settings: Settings
    router: Router  # a request's repository -> its upstream and key; see upstream/routing.py
    upstream: CachingUpstream
    engine: AsyncEngine
    tokens: TokenService
    credentials: CredentialChecker
    manifests: ManifestService
    blobs: BlobService

    directory: Directory
    management: ManagementService
    login_failures: FailureLimiter
    profile_logins: ProfileLogins
    profiles: MachineProfiles
    _refresh: asyncio.Task[None] | None = None
    _retention: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Hub:
        secure_data_dir(settings.data_dir)
        router = Router(settings.configured_upstreams)
        upstream = cached(make_routed_upstream(settings, router), settings)
        blob_cache = settings.cache.blobs
        blobs = BlobService(
            upstream,
            BlobCache(blob_cache.path, blob_cache.max_size) if blob_cache is not None else None,
            pass_redirects=settings.blobs.redirect == "pass",
        )
        engine = await open_engine(settings)
        retention_days = settings.database.filtered_retention_days
        store = FilteredDigestStore(
            engine,
            retention=timedelta(days=retention_days) if retention_days is not None else None,
            busy_timeout=settings.database.busy_timeout,
        )
        management = ManagementService(engine)
        await management.import_config(settings.machine_types)
        directory = Directory(engine, settings.machine_types)
        await directory.load()
        management.on_change(directory.changed)  # a change made here is served at once
        matchers = Matchers(settings.features.matchers, settings.features.aliases)
        profile_logins = ProfileLogins(
            settings.accounts, settings.features, lambda: directory.profiles
        )
        hub = cls(
            settings=settings,
            router=router,
            upstream=upstream,
            engine=engine,
            tokens=TokenService(await signing_key(engine), ttl=settings.token.ttl),
            credentials=CredentialChecker(directory),
            manifests=ManifestService(
                upstream,
                store,
                matchers,
                filtered_cache_bytes=settings.cache.filtered_max_size,
            ),
            blobs=blobs,
            directory=directory,
            management=management,
            login_failures=FailureLimiter(
                settings.login_limit.failures, settings.login_limit.window
            ),
            profile_logins=profile_logins,
            profiles=MachineProfiles(lambda: directory.profiles, profile_logins),
        )
        hub._refresh = asyncio.create_task(
            directory.refresh_forever(settings.database.refresh_interval)
        )
        if store.retention is not None:
            hub._retention = asyncio.create_task(
                store.retain_forever(settings.database.last_served_interval)
            )
        return hub

    async def close(self) -> None:
        for task in (self._refresh, self._retention):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._retention is not None:
            await self.manifests.store.flush_served()  # the marks noted since the last write
        await self.manifests.store.close()
        await self.upstream.close()
        await self.engine.dispose()
