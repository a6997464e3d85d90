"""Where the management CLI sends its work: the configured database, or a remote server's API.

Both answer with the API's JSON shapes, so the CLI prints one format whichever it talks to.
"""

from __future__ import annotations

import getpass
from typing import Any, Protocol

import aiohttp

from metahub import errors
from metahub.config import Settings
from metahub.management.service import ManagementService
from metahub.store.database import default_url, open_database

Json = dict[str, Any]


class Backend(Protocol):
    async def list_machine_types(self) -> list[Json]: ...
    async def get_machine_type(self, name: str) -> Json: ...
    async def create_machine_type(self, body: Json) -> Json: ...
    async def update_machine_type(self, name: str, body: Json) -> Json: ...
    async def delete_machine_type(self, name: str) -> None: ...
    async def create_credential(self, machine_type: str, body: Json) -> Json: ...
    async def list_credentials(self, machine_type: str | None) -> list[Json]: ...
    async def revoke_credential(self, credential_id: str) -> Json: ...
    async def create_admin(self, login: str, password: str) -> None: ...
    async def create_admin_token(self, login: str, name: str) -> Json: ...
    async def close(self) -> None: ...


class LocalBackend:
    """Works on the configured database directly (the server need not run)."""

    def __init__(self, service: ManagementService) -> None:
        self.service = service
        self.actor = f"cli:{getpass.getuser()}"

    @classmethod
    async def open(cls, settings: Settings) -> LocalBackend:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = await open_database(settings.database.url or default_url(settings.data_dir))
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

    async def create_admin(self, login: str, password: str) -> None:
        await self.service.create_admin(self.actor, login, password)

    async def create_admin_token(self, login: str, name: str) -> Json:
        issued = await self.service.create_admin_token(self.actor, login, name)
        return {"id": issued.id, "login": issued.login, "token": issued.secret}


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
                data = await response.json(content_type=None)
                if response.status >= 400:
                    error = (data.get("errors") or [{}])[0] if isinstance(data, dict) else {}
                    raise errors.RegistryError(
                        f"{self.server}: {error.get('message', response.reason)}",
                        status=response.status,
                    )
                return data
        except aiohttp.ClientError as exc:
            raise errors.UpstreamUnavailable(f"cannot reach {self.server}: {exc}") from exc

    async def list_machine_types(self) -> list[Json]:
        return list(await self._call("GET", "/machine-types"))

    async def get_machine_type(self, name: str) -> Json:
        return dict(await self._call("GET", f"/machine-types/{name}"))

    async def create_machine_type(self, body: Json) -> Json:
        return dict(await self._call("POST", "/machine-types", body))

    async def update_machine_type(self, name: str, body: Json) -> Json:
        return dict(await self._call("PATCH", f"/machine-types/{name}", body))

    async def delete_machine_type(self, name: str) -> None:
        await self._call("DELETE", f"/machine-types/{name}")

    async def create_credential(self, machine_type: str, body: Json) -> Json:
        if body.get("expires") is not None:
            body = {**body, "expires": body["expires"].isoformat()}
        return dict(await self._call("POST", f"/machine-types/{machine_type}/credentials", body))

    async def list_credentials(self, machine_type: str | None) -> list[Json]:
        path = f"/machine-types/{machine_type}/credentials" if machine_type else "/credentials"
        return list(await self._call("GET", path))

    async def revoke_credential(self, credential_id: str) -> Json:
        return dict(await self._call("POST", f"/credentials/{credential_id}/revoke"))

    async def create_admin(self, login: str, password: str) -> None:
        await self._call("POST", "/admins", {"login": login, "password": password})

    async def create_admin_token(self, login: str, name: str) -> Json:
        return dict(await self._call("POST", f"/admins/{login}/tokens", {"name": name}))
