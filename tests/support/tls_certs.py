"""Certificates for the TLS tests, made by ``trustme``: one CA, a server certificate for
127.0.0.1 and localhost, and client certificates by name, each written as PEM files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    directory: Path
    ca: trustme.CA

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.directory / "server.pem"

    def client_pem(self, name: str) -> Path:
        """A client certificate (key and chain in one file) whose SAN is DNS ``name``."""
        path = self.directory / f"client-{name}.pem"
        if not path.exists():
            self.ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    def client_context(self, name: str | None) -> ssl.SSLContext:
        """A client's context trusting the CA, with the certificate of ``name`` if given."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if name is not None:
            context.load_cert_chain(str(self.client_pem(name)))
        return context


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    certs = Certificates(directory, ca)
    ca.cert_pem.write_to_path(str(certs.ca_pem))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(certs.server_pem))
    return certs
