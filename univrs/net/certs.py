"""Creating the cluster CA, node certificates and client certificates (``univrs certs``).

A certs directory holds (names after ``cockroach cert``'s layout, our own contents):

* ``ca.crt`` / ``ca.key``: the cluster CA (the key signs new certificates; keep it off the
  nodes if you can: a node needs only ``ca.crt``);
* ``node.<id>.crt`` / ``node.<id>.key``: a node certificate: SAN URI ``univrs://node/<id>``
  plus the node's host names and IP addresses, good for serving and for dialing;
* ``client.<name>.crt`` / ``client.<name>.key``: a client certificate: SAN URI
  ``univrs://client/<name>``, good for dialing only.

Keys are ECDSA P-256, written with mode 0600 (created so, never widened); certificates 0644.
Existing files are never overwritten unless ``overwrite`` is set (rotation writes new files
next to the old ones and renames them into place, so a node reloading mid-way never reads a
half-written file).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from univrs.net.tls import CLIENT_URI_PREFIX, NODE_URI_PREFIX

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 10 * 365
CERT_DAYS = 2 * 365
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CertError(Exception):
    """A certificate cannot be created as asked (the message says why)."""


def node_files(certs_dir: pathlib.Path, node_id: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(certificate, key) paths of node ``node_id`` in ``certs_dir``."""
    return certs_dir / f"node.{node_id}.crt", certs_dir / f"node.{node_id}.key"


def client_files(certs_dir: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(certificate, key) paths of client ``name`` in ``certs_dir``."""
    return certs_dir / f"client.{name}.crt", certs_dir / f"client.{name}.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: pathlib.Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte (a temporary file renamed
    into place: readers see the old file or the new one)."""
    if path.exists() and not overwrite:
        raise CertError(f"{path} exists (pass --overwrite to replace it)")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed a certificate's 0644; never widens a key
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_ca(
    certs_dir: pathlib.Path, *, common_name: str = "univrs cluster CA", overwrite: bool = False
) -> pathlib.Path:
    """Create the CA's key and self-signed certificate in ``certs_dir``; returns ``ca.crt``."""
    certs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    if (certs_dir / CA_KEY).exists() and not overwrite:
        raise CertError(f"{certs_dir / CA_KEY} exists (pass --overwrite to replace it)")
    _write(certs_dir / CA_KEY, _key_pem(key), 0o600, overwrite)
    _write(certs_dir / CA_CERT, _cert_pem(cert), 0o644, overwrite)
    return certs_dir / CA_CERT


def _load_ca(
    certs_dir: pathlib.Path, ca_key: pathlib.Path | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = certs_dir / CA_CERT, ca_key or certs_dir / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise CertError(
            f"cannot read the CA ({exc}); create it with `univrs certs create-ca`"
        ) from None
    except ValueError as exc:
        raise CertError(f"the CA files are not PEM certificates/keys: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path}: expected an EC key")
    return cert, key


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise CertError(
            f"{kind} {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip().strip("[]")
        if not host:
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _issue(
    certs_dir: pathlib.Path,
    *,
    common_name: str,
    uri: str,
    hosts: Iterable[str],
    server: bool,
    files: tuple[pathlib.Path, pathlib.Path],
    ca_key: pathlib.Path | None,
    overwrite: bool,
    days: int,
) -> tuple[pathlib.Path, pathlib.Path]:
    ca_cert, ca_private = _load_ca(certs_dir, ca_key)
    for path in files:
        if path.exists() and not overwrite:
            raise CertError(f"{path} exists (pass --overwrite to replace it)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri), *_sans(hosts)]
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_private, hashes.SHA256())
    )
    cert_path, key_path = files
    _write(key_path, _key_pem(key), 0o600, overwrite)
    _write(cert_path, _cert_pem(cert), 0o644, overwrite)
    return cert_path, key_path


def create_node(
    certs_dir: pathlib.Path,
    node_id: str,
    hosts: Iterable[str],
    *,
    ca_key: pathlib.Path | None = None,
    overwrite: bool = False,
    days: int = CERT_DAYS,
    files: tuple[pathlib.Path, pathlib.Path] | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Create node ``node_id``'s certificate (for ``hosts``: names and IPs) and key, signed by
    the CA in ``certs_dir``; returns (certificate, key) paths (``files`` to choose them)."""
    _check_name("node id", node_id)
    hosts = list(hosts)
    if not hosts:
        raise CertError("give at least one --host the node is reached at")
    return _issue(
        certs_dir,
        common_name=f"node {node_id}",
        uri=f"{NODE_URI_PREFIX}{node_id}",
        hosts=hosts,
        server=True,
        files=files or node_files(certs_dir, node_id),
        ca_key=ca_key,
        overwrite=overwrite,
        days=days,
    )


def create_client(
    certs_dir: pathlib.Path,
    name: str,
    *,
    ca_key: pathlib.Path | None = None,
    overwrite: bool = False,
    days: int = CERT_DAYS,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Create client ``name``'s certificate and key, signed by the CA in ``certs_dir``."""
    _check_name("client name", name)
    return _issue(
        certs_dir,
        common_name=name,
        uri=f"{CLIENT_URI_PREFIX}{name}",
        hosts=(),
        server=False,
        files=client_files(certs_dir, name),
        ca_key=ca_key,
        overwrite=overwrite,
        days=days,
    )


def describe(path: pathlib.Path) -> str:
    """One line about the certificate at ``path``: whom it names, until when it is valid."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in sans]
    except x509.ExtensionNotFound:
        names = []
    subject = cert.subject.rfc4514_string()
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return f"{subject}; {', '.join(names) or 'no SAN'}; valid until {until}"
