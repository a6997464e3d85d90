"""Where the management CLI sends its work: the configured database, or a remote server's API.

Both answer with the API's JSON shapes, so the CLI prints one format whichever it talks to.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import orjson

from metahub import errors
from metahub.config import Settings
from metahub.management.service import ManagementService
from metahub.store.database import open_engine
from metahub.store.files import secure_data_dir

Json = dict[str, Any]
# Seconds a streamed answer (warming's progress) may stay silent before it is given up on.
STREAM_IDLE = 300
T = TypeVar("T")


class Backend(Protocol):
    async def list_machine_types(self) -> list[Json]: ...
    async def get_machine_type(self, name: str) -> Json: ...
    async def create_machine_type(self, body: Json) -> Json: ...
    async def update_machine_type(self, name: str, body: Json) -> Json: ...
    async def delete_machine_type(self, name: str) -> None: ...
    async def create_credential(self, machine_type: str, body: Json) -> Json: ...
    async def list_credentials(self, machine_type: str | None) -> list[Json]: ...
    async def revoke_credential(self, credential_id: str) -> Json: ...
    async def rotate_credential(self, credential_id: str) -> Json: ...
    async def expire_credential(self, credential_id: str, at: datetime) -> Json: ...
    async def create_admin(self, login: str, password: str) -> None: ...
    async def list_admins(self) -> list[str]: ...
    async def delete_admin(self, login: str) -> None: ...
    async def create_admin_token(
        self, login: str, name: str, expires: datetime | None = None
    ) -> Json: ...
    async def list_admin_tokens(self, login: str) -> list[Json]: ...
    async def revoke_admin_token(self, token_id: str) -> None: ...
    async def close(self) -> None: ...


class LocalBackend:
    """Works on the configured database directly (the server need not run)."""

    def __init__(self, service: ManagementService) -> None:
        self.service = service
        self.actor = f"cli:{getpass.getuser()}"

    @classmethod
    async def open(cls, settings: Settings) -> LocalBackend:
        secure_data_dir(settings.data_dir)
        engine = await open_engine(settings)
        service = ManagementService(engine)
        await service.import_config(settings.machine_types)
        return cls(service)

    async def close(self) -> None:
        await self.service.engine.dispose()

    async def list_machine_types(self) -> list[Json]:
        return [m.to_json() for m in await self.service.list_machine_types()]

    async def get_machine_type(self, name: str) -> Json:
        return (await self.service.get_machine_type(name)).to_json()

    async def create_machine_type(self, body: Json) -> Json:
        created = await self.service.create_machine_type(
            self.actor,
            body["name"],
            body.get("features", []),
            mode=body.get("mode", "best"),
            platforms=body.get("platforms", []),
            repositories=body.get("repositories", []),
            description=body.get("description", ""),
        )
        return created.to_json()

    async def update_machine_type(self, name: str, body: Json) -> Json:
        return (await self.service.update_machine_type(self.actor, name, **body)).to_json()

    async def delete_machine_type(self, name: str) -> None:
        await self.service.delete_machine_type(self.actor, name)

    async def create_credential(self, machine_type: str, body: Json) -> Json:
        issued = await self.service.create_credential(
            self.actor, machine_type, login=body.get("login"), expires=body.get("expires")
        )
        return {"id": issued.id, "login": issued.login, "password": issued.secret}

    async def list_credentials(self, machine_type: str | None) -> list[Json]:
        return [c.to_json() for c in await self.service.list_credentials(machine_type)]

    async def revoke_credential(self, credential_id: str) -> Json:
        return (await self.service.revoke_credential(self.actor, credential_id)).to_json()

    async def rotate_credential(self, credential_id: str) -> Json:
        issued = await self.service.rotate_credential(self.actor, credential_id)
        return {"id": issued.id, "login": issued.login, "password": issued.secret}

    async def expire_credential(self, credential_id: str, at: datetime) -> Json:
        return (await self.service.expire_credential(self.actor, credential_id, at)).to_json()

    async def create_admin(self, login: str, password: str) -> None:
        await self.service.create_admin(self.actor, login, password)

    async def list_admins(self) -> list[str]:
        return await self.service.list_admins()

    async def delete_admin(self, login: str) -> None:
        await self.service.delete_admin(self.actor, login)

    async def create_admin_token(
        self, login: str, name: str, expires: datetime | None = None
    ) -> Json:
        issued = await self.service.create_admin_token(self.actor, login, name, expires=expires)
        return {"id": issued.id, "login": issued.login, "token": issued.secret}

    async def list_admin_tokens(self, login: str) -> list[Json]:
        return [t.to_json() for t in await self.service.list_admin_tokens(login)]

    async def revoke_admin_token(self, token_id: str) -> None:
        await self.service.revoke_admin_token(self.actor, token_id)


class RemoteBackend:
    """Talks to a running MetaHub's management API with an admin token."""

    def __init__(self, server: str, token: str) -> None:
        self.base = server.rstrip("/") + "/api/v1"
        self.server = server
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: Json | None = None) -> Any:
        try:
            async with self._session.request(method, self.base + path, json=body) as response:
                if response.status == 204:
                    return None
                try:
                    data = await response.json(content_type=None)
                except ValueError as exc:
                    kind = response.content_type or "no content type"
                    raise errors.RegistryError(
                        f"{self.server} answered {response.status} with {kind}, not MetaHub's "
                        "management API: is the URL right?",
                        status=502,
                    ) from exc
                if response.status >= 400:
                    error = (data.get("errors") or [{}])[0] if isinstance(data, dict) else {}
                    raise errors.RegistryError(
                        f"{self.server}: {error.get('message', response.reason)}",
                        status=response.status,
                    )
                return data
        except aiohttp.ClientError as exc:
            raise errors.UpstreamUnavailable(f"cannot reach {self.server}: {exc}") from exc

    async def events(self, path: str, body: Json) -> AsyncIterator[Json]:
        """POST `body` and read the NDJSON answer, one event a line, as the server sends it.

        No overall time limit (a warm takes as long as its blobs do); a server silent for
        STREAM_IDLE seconds is given up on.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_read=STREAM_IDLE)
        try:
            async with self._session.post(self.base + path, json=body, timeout=timeout) as answer:
                if answer.status >= 400:
                    await self._raise_for(answer)
                async for line in answer.content:
                    if line.strip():
                        yield self._shaped(_json_line(self.server, line), dict)
        except aiohttp.ClientError as exc:
            raise errors.UpstreamUnavailable(f"cannot reach {self.server}: {exc}") from exc
        except TimeoutError as exc:
            raise errors.UpstreamTimeout(
                f"{self.server} sent nothing for {STREAM_IDLE} seconds"
            ) from exc

    async def _raise_for(self, response: aiohttp.ClientResponse) -> None:
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        error = (data.get("errors") or [{}])[0] if isinstance(data, dict) else {}
        raise errors.RegistryError(
            f"{self.server}: {error.get('message', response.reason)}", status=response.status
        )

    async def _object(self, method: str, path: str, body: Json | None = None) -> Json:
        return self._shaped(await self._call(method, path, body), dict)

    async def _list(self, method: str, path: str, body: Json | None = None) -> list[Any]:
        return self._shaped(await self._call(method, path, body), list)

    def _shaped(self, data: Any, kind: type[T]) -> T:
        if not isinstance(data, kind):
            raise errors.RegistryError(
                f"{self.server} answered with a {type(data).__name__}, not a {kind.__name__}: "
                "is it MetaHub's management API?",
                status=502,
            )
        return data

    async def list_machine_types(self) -> list[Json]:
        return await self._list("GET", "/machine-types")

    async def get_machine_type(self, name: str) -> Json:
        return await self._object("GET", f"/machine-types/{_segment(name)}")

    async def create_machine_type(self, body: Json) -> Json:
        return await self._object("POST", "/machine-types", body)

    async def update_machine_type(self, name: str, body: Json) -> Json:
        return await self._object("PATCH", f"/machine-types/{_segment(name)}", body)

    async def delete_machine_type(self, name: str) -> None:
        await self._call("DELETE", f"/machine-types/{_segment(name)}")

    async def create_credential(self, machine_type: str, body: Json) -> Json:
        if body.get("expires") is not None:
            body = {**body, "expires": body["expires"].isoformat()}
        path = f"/machine-types/{_segment(machine_type)}/credentials"
        return await self._object("POST", path, body)

    async def list_credentials(self, machine_type: str | None) -> list[Json]:
        path = (
            f"/machine-types/{_segment(machine_type)}/credentials"
            if machine_type
            else "/credentials"
        )
        return await self._list("GET", path)

    async def revoke_credential(self, credential_id: str) -> Json:
        return await self._object("POST", f"/credentials/{_segment(credential_id)}/revoke")

    async def rotate_credential(self, credential_id: str) -> Json:
        return await self._object("POST", f"/credentials/{_segment(credential_id)}/rotate")

    async def expire_credential(self, credential_id: str, at: datetime) -> Json:
        path = f"/credentials/{_segment(credential_id)}/expire"
        return await self._object("POST", path, {"at": at.isoformat()})

    async def create_admin(self, login: str, password: str) -> None:
        await self._call("POST", "/admins", {"login": login, "password": password})

    async def list_admins(self) -> list[str]:
        return await self._list("GET", "/admins")

    async def delete_admin(self, login: str) -> None:
        await self._call("DELETE", f"/admins/{_segment(login)}")

    async def create_admin_token(
        self, login: str, name: str, expires: datetime | None = None
    ) -> Json:
        body: Json = {"name": name}
        if expires is not None:
            body["expires"] = expires.isoformat()
        return await self._object("POST", f"/admins/{_segment(login)}/tokens", body)

    async def list_admin_tokens(self, login: str) -> list[Json]:
        return await self._list("GET", f"/admins/{_segment(login)}/tokens")

    async def revoke_admin_token(self, token_id: str) -> None:
        await self._call("POST", f"/tokens/{_segment(token_id)}/revoke")


def _json_line(server: str, line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise errors.RegistryError(
            f"{server} sent a line that is not JSON: {line[:80]!r}", status=502
        ) from exc


def _segment(value: str) -> str:
    """One path segment. The server decodes `%2F` before routing, so a name with '/' would
    reach another route: no machine type, admin or id has one."""
    if "/" in value:
        raise errors.InvalidRequest(f"{value!r}: no name or id contains '/'")
    return quote(value, safe="")
