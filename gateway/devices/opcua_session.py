"""Opening and closing one OPC UA session: the asyncua `Client` as configured, the one session
attempt of a run, its failures typed for the supervisor, and a bounded close.

asyncua's own reconnection stays off and its other self-repair is disarmed (see `make_client`):
the supervisor is the one owner of retries, so a restarting server sees one session attempt per
backoff step. What retrying can fix (refused or dropped connection, timeouts, a server that does
not trust our certificate yet) is `DeviceUnavailable`; what it cannot (a refused user, no
endpoint with the configured security) is `DeviceMisconfigured`.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from gateway.config.plc import OpcuaConfig
from gateway.devices import opcua_security as security
from gateway.devices.base import DeviceMisconfigured, DeviceUnavailable

CLOSE_TIMEOUT_S: Final = 2.0
# asyncua's connection supervisor probes the server every `watchdog_intervall` seconds on its
# own; our keepalive is the watchdog (with the configured timing), so its probe is pushed far
# out. It still notices a dropped socket at once, and never reconnects (auto_reconnect off).
LIBRARY_PROBE_S: Final = 3600.0
USER_REFUSED: Final = frozenset(
    {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
)


def make_client(cfg: OpcuaConfig) -> Client:
    client = Client(
        cfg.endpoint,
        timeout=cfg.request_timeout_s,
        watchdog_intervall=LIBRARY_PROBE_S,
        auto_reconnect=False,  # the supervisor owns reconnection
    )
    client.name = client.description = f"Tracegate {cfg.id}"
    client.application_uri = security.application_uri_for(cfg.id)
    client.product_uri = "urn:tracegate"
    client.session_timeout = round(cfg.session_timeout_s * 1000)
    # asyncua 2.1 re-creates on its own a subscription it deems stale
    # (Client._stale_watchdog_loop): a retry behind our back, on node ids that a program
    # download may have invalidated. An infinite margin disarms it; our keepalive task treats
    # a silent subscription as DeviceUnavailable instead.
    client._stale_check_margin = math.inf
    return client


async def open_session(
    client: Client, cfg: OpcuaConfig, identity: security.AppIdentity | None
) -> None:
    """Security, user, then the one session attempt. Raises DeviceUnavailable or
    DeviceMisconfigured; on any failure (cancellation included) the socket is closed."""
    try:
        await security.configure(client, cfg, identity)
        await client.connect()
    except BaseException as exc:
        # asyncua leaves the socket open when cancelled in the middle of its handshake.
        client.disconnect_socket()
        if isinstance(exc, Exception) and not isinstance(exc, DeviceMisconfigured):
            raise _typed(exc, cfg, identity) from exc
        raise


def _typed(exc: Exception, cfg: OpcuaConfig, identity: security.AppIdentity | None) -> Exception:
    where = public_url(cfg.endpoint)
    if isinstance(exc, UaStatusCodeError):
        name = ua.StatusCode(exc.code).name
        if name in USER_REFUSED:
            who = f"user {cfg.username!r}" if cfg.username else "anonymous access"
            # Not retried: a wrong password repeated at every backoff step can lock the account
            # on servers that count failures, and only a configuration change fixes it.
            return DeviceMisconfigured(f"{where} refuses {who} ({name})")
        if name.startswith("BadCertificate") or name == "BadSecurityChecksFailed":
            # Retried: trusting our certificate on the server is done there, not in our config.
            hint = (
                f"; trust {identity.source} (SHA-1 {identity.thumbprint}) on the server"
                if identity is not None
                else ""
            )
            return DeviceUnavailable(f"{where} refused our certificate ({name}){hint}")
        return DeviceUnavailable(f"{where} refused the session: {name}")
    if isinstance(exc, TimeoutError):
        return DeviceUnavailable(f"{where} did not answer within {cfg.request_timeout_s} s")
    if isinstance(exc, ConnectionError | OSError):
        return DeviceUnavailable(f"cannot connect to {where}: {exc!r}")
    if isinstance(exc, UaError) and "No matching endpoints" in str(exc):
        wanted = (
            cfg.security_mode
            if cfg.security_mode == "None"
            else (f"{cfg.security_mode} / {cfg.security_policy}")
        )
        return DeviceMisconfigured(f"{where} offers no endpoint with security {wanted}")
    if isinstance(exc, UaError):
        return DeviceUnavailable(f"{where}: {exc}")
    return exc


async def close_session(client: Client) -> None:
    """CloseSession (which deletes our subscription), bounded; then the socket, whatever
    happened. asyncua's own tasks (publish loop, supervisor) end with the session."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await client.disconnect()
    except TimeoutError:
        pass
    finally:
        client.disconnect_socket()


def public_url(endpoint: str) -> str:
    """The endpoint without any user:password@ part."""
    scheme, sep, rest = endpoint.partition("://")
    netloc, slash, tail = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{tail}"
