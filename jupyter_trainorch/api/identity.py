"""Who is calling the service, from authentication only.

- ``OwnerIdentityProvider`` (a user's own service): holding the service's token (in a
  runtime file only that user can read) makes the caller the user who runs the service.
- ``HubIdentityProvider`` (``trainorch serve --hub``): the token is a JupyterHub token;
  the hub says whose it is, and it must carry the scope to access this service.
"""

from __future__ import annotations

import getpass
import hmac
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import default

from ..orchestrator.access import Caller


@dataclass
class ServiceUser(User):
    admin: bool = False
    groups: list[str] = field(default_factory=list)


def caller_of(user: Any, admin_users: list[str], admin_groups: list[str]) -> Caller:
    """The ``Caller`` for an authenticated ``ServiceUser``, with the configured admins."""
    name = user.username
    admin = bool(getattr(user, "admin", False)) or name in admin_users
    groups = [str(group) for group in getattr(user, "groups", None) or []]
    admin = admin or bool(set(groups) & set(admin_groups))
    return Caller(name=name, admin=admin, groups=tuple(groups))


class _TokenOnly(IdentityProvider):
    """Token in the Authorization header (or ``?token=`` for websockets); no login page,
    no cookies: browsers reach the service through their own Jupyter server."""

    @property
    def login_available(self) -> bool:
        return False

    def get_user(self, handler: web.RequestHandler) -> Any:
        return self._identify(handler)

    async def _identify(self, handler: web.RequestHandler) -> ServiceUser | None:
        raise NotImplementedError

    def is_token_authenticated(self, handler: web.RequestHandler) -> bool:
        handler.current_user  # noqa: B018 - authenticates the request first
        return getattr(handler, "_token_authenticated", False)


class OwnerIdentityProvider(_TokenOnly):
    owner = AnyTrait(help="The user the service runs for (default: its OS user).").tag(config=True)

    @default("owner")
    def _default_owner(self) -> str:
        return getpass.getuser()

    async def _identify(self, handler: web.RequestHandler) -> ServiceUser | None:
        token = self.get_token(handler)
        if not token or not self.token or not hmac.compare_digest(token, self.token):
            return None
        handler._token_authenticated = True  # type: ignore[attr-defined]
        return ServiceUser(username=str(self.owner), admin=True)


class HubIdentityProvider(_TokenOnly):
    """Configured from the environment JupyterHub gives a managed service."""

    hub_auth = AnyTrait()

    @default("hub_auth")
    def _default_hub_auth(self) -> Any:
        from jupyterhub.services.auth import HubAuth

        # Access scope: access:services!service=<JUPYTERHUB_SERVICE_NAME>.
        return HubAuth(cache_max_age=60)

    @default("token")
    def _default_token(self) -> str:
        return ""  # no shared token: every caller is a hub user

    async def _identify(self, handler: web.RequestHandler) -> ServiceUser | None:
        hub = self.hub_auth
        token = hub.get_token(handler, in_cookie=False)
        if not token:
            return None
        model = await hub.user_for_token(token, sync=False)
        if not model or model.get("kind", "user") != "user":
            return None
        if hub.access_scopes and not hub.check_scopes(hub.access_scopes, model):
            # A hub user, not allowed here: say which scope is missing. A single-user server
            # whose token lacks it fails every request it forwards, so this names the fix.
            scopes = sorted(hub.access_scopes)
            scope = next((s for s in scopes if "!service=" in s), scopes[0])
            raise web.HTTPError(
                403,
                f"{model.get('name')}'s token lacks the scope {scope} that the trainorch "
                "service requires (JupyterHub grants it through the user's roles and, for "
                "requests forwarded by a user's server, c.Spawner.server_token_scopes)",
            )
        handler._token_authenticated = True  # type: ignore[attr-defined]
        return ServiceUser(
            username=model["name"],
            admin=bool(model.get("admin")),
            groups=list(model.get("groups") or []),
        )
