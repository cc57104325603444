"""Certificates for tests: a CA, a broker certificate for 127.0.0.1/localhost, device certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path: Path, cert, key) -> dict[str, str]:
    cert_path, key_path = path.with_suffix(".pem"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return {"cert": str(cert_path), "key": str(key_path)}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path, cn: str = "edge test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    paths = _write(folder / "ca", cert, key)
    return cert, key, paths


def issue(folder: Path, ca_cert, ca_key, cn: str, *, server: bool = False, days: int = 30) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return _write(folder / cn, builder.sign(ca_key, hashes.SHA256()), key)


def make_pki(folder: Path, devices: tuple[str, ...] = ("dev-1", "dev-2")) -> dict:
    """{'ca': path, 'server': {cert,key}, 'devices': {name: {cert,key}}, 'rogue_ca': path}."""
    ca_cert, ca_key, ca_paths = make_ca(folder)
    rogue_dir = folder / "rogue"
    rogue_dir.mkdir(exist_ok=True)
    rogue_cert, rogue_key, rogue_paths = make_ca(rogue_dir, "rogue CA")
    return {
        "ca": ca_paths["cert"],
        "ca_obj": (ca_cert, ca_key),
        "server": issue(folder, ca_cert, ca_key, "broker", server=True),
        "devices": {name: issue(folder, ca_cert, ca_key, name) for name in devices},
        "rogue_ca": rogue_paths["cert"],
        "rogue_device": issue(rogue_dir, rogue_cert, rogue_key, "dev-1"),
    }
