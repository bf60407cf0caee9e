"""Throwaway TLS material for the security tests: a CA, server and client certificates.

Made with ``cryptography`` (a Salt dependency, so always installed). EC P-256
keys keep generation in the milliseconds. Private keys are written 0600: libpq
refuses a client key anyone else can read.
"""

import dataclasses
import datetime
import ipaddress
import os
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("127.0.0.1", "localhost")
WRONG_HOST_NAME = "wrong-host.invalid"  # the only name on the wrong-host server certificate
CLIENT_NAME = "relay_client"  # also the PostgreSQL role that logs in with the client certificate


@dataclasses.dataclass(frozen=True)
class Certs:
    """Paths of the PEM files one throwaway CA issued."""

    ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    wrong_host_cert: pathlib.Path
    wrong_host_key: pathlib.Path

    def for_wrong_host(self):
        """The same CA with the wrong-host certificate as the server's: what a server started with it presents."""
        return dataclasses.replace(self, server_cert=self.wrong_host_cert, server_key=self.wrong_host_key)


def _name(common_name):
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "salt-relay tests"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _write_key(path, key):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _write_cert(path, cert):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _builder(subject, issuer, public_key, now):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def make_certs(directory, prefix=""):
    """A CA plus what it signed, in ``directory``: a server (CN/SAN 127.0.0.1, localhost),
    a client and a wrong-host server certificate (SAN wrong-host.invalid only)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"salt-relay throwaway CA {prefix or os.urandom(4).hex()}")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name, usage, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(common_name), ca_cert.subject, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        SERVER_NAMES[0],
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key, client_cert = leaf(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH)
    # Valid and signed by the CA, for a name the tests never connect to.
    wrong_host_key, wrong_host_cert = leaf(WRONG_HOST_NAME, ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName(WRONG_HOST_NAME)])

    certs = Certs(
        ca=directory / f"{prefix}ca.pem",
        server_cert=directory / f"{prefix}server.pem",
        server_key=directory / f"{prefix}server.key",
        client_cert=directory / f"{prefix}client.pem",
        client_key=directory / f"{prefix}client.key",
        wrong_host_cert=directory / f"{prefix}wrong-host.pem",
        wrong_host_key=directory / f"{prefix}wrong-host.key",
    )
    _write_cert(certs.ca, ca_cert)
    _write_cert(certs.server_cert, server_cert)
    _write_key(certs.server_key, server_key)
    _write_cert(certs.client_cert, client_cert)
    _write_key(certs.client_key, client_key)
    _write_cert(certs.wrong_host_cert, wrong_host_cert)
    _write_key(certs.wrong_host_key, wrong_host_key)
    return certs
