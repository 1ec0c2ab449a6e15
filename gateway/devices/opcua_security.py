"""Who the OPC UA adapter is to a server: its application certificate and its user.

With security (Sign, SignAndEncrypt) the client needs an application instance certificate. It is
the configured `certificate_file`/`private_key_file`, or one generated on the first run under
`<state_dir>/opcua/<device id>/` and kept there: a server (an S7-1500, TwinCAT) trusts a client
certificate once, by hand, so a new one at every start would lock the gateway out. The
application URI the client announces is read from the certificate itself (its URI
SubjectAlternativeName), so the two always match; servers reject a session where they differ.

Files are read here, synchronously (a few kilobytes, once per connect), and handed to asyncua
as bytes: given paths, asyncua 2.1 reads them through anyio worker threads, which outlive the
call by seconds.

The password comes from the first line of `password_file` or from `password_env`, at every
connect (so a rotated secret needs no restart); it is never logged nor put in an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen, security_policies
from asyncua.crypto.uacrypto import CertProperties
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.config.plc import OpcuaConfig
from gateway.devices.base import DeviceMisconfigured

CERT_NAME: Final = "client-cert.der"
KEY_NAME: Final = "client-key.pem"
# Long, because an expired certificate stops the line's traceability until someone trusts a new
# one on the PLC; replace it with one of your PKI (`certificate_file`) where policy asks.
GENERATED_VALID_DAYS: Final = 3650
EXPIRY_WARNING: Final = timedelta(days=30)

MODES: Final = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


@dataclass(frozen=True)
class AppIdentity:
    certificate: bytes  # DER
    private_key: bytes  # PEM
    application_uri: str
    source: Path  # the certificate file
    not_after: datetime

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the certificate, as servers show it in their trust lists."""
        return hashlib.sha1(self.certificate, usedforsecurity=False).hexdigest()


def application_uri_for(device_id: str) -> str:
    return f"urn:{socket.gethostname()}:tracegate:{device_id}"


async def app_identity(cfg: OpcuaConfig, state_dir: Path, log: Any) -> AppIdentity:
    """The configured certificate, or the kept generated one (made on first use)."""
    if cfg.certificate_file is not None and cfg.private_key_file is not None:
        return _load(cfg.certificate_file, cfg.private_key_file)
    folder = state_dir / "opcua" / cfg.id
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        return _load(cert_path, key_path)
    # RSA key generation takes a good part of a second: not on the event loop.
    try:
        await asyncio.to_thread(_generate, cert_path, key_path, application_uri_for(cfg.id), cfg.id)
    except OSError as exc:
        raise DeviceMisconfigured(
            f"cannot keep a generated certificate in {folder}: {exc}"
        ) from exc
    identity = _load(cert_path, key_path)
    # Once per device, ever: what to trust on the server (S7-1500: certificate manager of
    # the OPC UA server; TwinCAT: the server's PKI "rejected" folder).
    log.info(
        "opcua_certificate_generated",
        path=str(cert_path),
        sha1=identity.thumbprint,
        application_uri=identity.application_uri,
        valid_until=identity.not_after.isoformat(),
    )
    return identity


def _generate(cert_path: Path, key_path: Path, app_uri: str, device_id: str) -> None:
    key = cert_gen.generate_private_key()
    host = socket.gethostname()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        f"Tracegate {device_id}@{host}",
        {"organizationName": "Tracegate"},
        [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
        days=GENERATED_VALID_DAYS,
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))


def _load(cert_path: Path, key_path: Path) -> AppIdentity:
    try:
        cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise DeviceMisconfigured(f"cannot read the OPC UA client certificate: {exc}") from exc
    try:
        cert = _parse_cert(cert_bytes)
        key: Any = (
            serialization.load_pem_private_key(key_bytes, password=None)
            if b"-----BEGIN" in key_bytes
            else serialization.load_der_private_key(key_bytes, password=None)
        )
    except (ValueError, TypeError) as exc:
        raise DeviceMisconfigured(
            f"{cert_path} / {key_path}: not a certificate and unencrypted private key ({exc})"
        ) from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if not uris:
        raise DeviceMisconfigured(
            f"{cert_path} has no URI subjectAltName: OPC UA needs the application URI there"
        )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return AppIdentity(
        certificate=cert.public_bytes(serialization.Encoding.DER),
        private_key=pem_key,
        application_uri=uris[0],
        source=cert_path,
        not_after=cert.not_valid_after_utc,
    )


def _parse_cert(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def server_certificate(cfg: OpcuaConfig) -> bytes | None:
    """The one server certificate to trust (DER), when configured."""
    if cfg.server_certificate_file is None:
        return None
    try:
        data = cfg.server_certificate_file.read_bytes()
        return _parse_cert(data).public_bytes(serialization.Encoding.DER)
    except (OSError, ValueError) as exc:
        raise DeviceMisconfigured(
            f"server_certificate_file {cfg.server_certificate_file}: {exc}"
        ) from exc


def password(cfg: OpcuaConfig) -> str | None:
    if cfg.password_file is not None:
        try:
            lines = cfg.password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeviceMisconfigured(f"cannot read password_file: {exc}") from exc
        if not lines or not lines[0]:
            raise DeviceMisconfigured(f"password_file {cfg.password_file} is empty")
        return lines[0]
    if cfg.password_env is not None:
        value = os.environ.get(cfg.password_env)
        if not value:
            raise DeviceMisconfigured(f"environment variable {cfg.password_env} is not set")
        return value
    return None


def expires_soon(identity: AppIdentity, now: datetime | None = None) -> bool:
    return identity.not_after - (now or datetime.now(UTC)) < EXPIRY_WARNING


async def configure(client: Client, cfg: OpcuaConfig, identity: AppIdentity | None) -> None:
    """Set the client's identity, message security and user. With security and no
    `server_certificate_file`, asyncua fetches the server's certificate from its endpoints
    first: one extra connection (GetEndpoints, no session) before the session's."""
    if identity is not None:
        client.application_uri = identity.application_uri
    if cfg.username is not None:
        client.set_user(cfg.username)
        secret = password(cfg)
        if secret is not None:
            client.set_password(secret)
    if cfg.security_mode == "None":
        return
    assert identity is not None
    server_cert = server_certificate(cfg)
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        certificate=CertProperties(identity.certificate, "der"),
        private_key=CertProperties(identity.private_key, "pem"),
        server_certificate=CertProperties(server_cert, "der") if server_cert else None,
        mode=MODES[cfg.security_mode],
    )
