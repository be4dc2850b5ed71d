"""A stand-in Better Auth issuer: real keys, a JWKS served over HTTP, tokens shaped like its JWT plugin's."""

import contextlib
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")


def generate_key(alg: str) -> Any:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES512":
        return ec.generate_private_key(ec.SECP521R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SigningKey:
    alg: str
    private_key: Any
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        public: dict[str, Any] = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        public["kid"] = self.kid
        if with_alg:
            public["alg"] = self.alg
        return public  # like Better Auth: no "use"


class Issuer:
    """Serves `/api/auth/jwks` on 127.0.0.1 and signs tokens with the keys it publishes.

    It can also misbehave the ways a real issuer does: be down, serve an oversized document,
    trickle its answer (`trickle`), or redirect (`redirect_to`). With `tls=True` it serves
    https:// with a certificate of its own test CA, whose certificate is in `ca_file`.
    """

    def __init__(self, keys: dict[str, SigningKey], *, tls: bool = False) -> None:
        self.keys = keys  # alg -> key; the same keys are reused across tests (RSA is slow to make)
        self.published: list[dict[str, Any]] = [key.jwk() for key in keys.values()]
        self.down = False
        # When set, the served document is padded (with a junk field) to exactly this many bytes.
        self.document_bytes: int | None = None
        # When set, (pieces, gap): the body is sent in that many pieces, `gap` seconds apart, so
        # each read is quick but the whole answer is slow. `trickling` is set when one starts.
        self.trickle: tuple[int, float] | None = None
        self.trickling = threading.Event()
        # When set, every request is answered 302 to this URL.
        self.redirect_to: str | None = None
        # How the body's end is told: Content-Length, chunks (HTTP/1.1), or closing the connection.
        self.framing: Literal["length", "chunked", "close"] = "length"
        self._count = threading.Lock()
        self._requests = 0
        self._closed = threading.Event()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with issuer._count:
                    issuer._requests += 1
                if issuer.down:
                    self.send_error(503)
                    return
                if issuer.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", issuer.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path != "/api/auth/jwks":
                    self.send_error(404)
                    return
                body = issuer.document()
                chunked = issuer.framing == "chunked"
                if chunked:
                    self.protocol_version = "HTTP/1.1"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if issuer.framing == "length":
                    self.send_header("Content-Length", str(len(body)))
                elif chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                # The client giving up mid-body is what the slow-issuer tests want.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    issuer.send_body(self.wfile, body, chunked=chunked)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.ca_file: Path | None = None
        self._certificates: tempfile.TemporaryDirectory[str] | None = None
        if tls:
            self._certificates = tempfile.TemporaryDirectory()
            context, self.ca_file = server_tls_context(Path(self._certificates.name))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    @property
    def requests(self) -> int:
        """How many requests reached the issuer (every path, every outcome)."""
        with self._count:
            return self._requests

    def send_body(self, out: Any, body: bytes, *, chunked: bool) -> None:
        pieces, gap = self.trickle or (3, 0.0)
        if self.trickle is not None:
            self.trickling.set()
        size = -(-len(body) // pieces)
        for start in range(0, len(body), size):
            if start and gap and self._closed.wait(gap):
                return
            piece = body[start : start + size]
            out.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            out.flush()
        if chunked:
            out.write(b"0\r\n\r\n")

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()
        if self._certificates is not None:
            self._certificates.cleanup()

    def document(self) -> bytes:
        """The JWKS as served: the published keys, padded to `document_bytes` if that is set."""
        if self.document_bytes is None:
            return json.dumps({"keys": self.published}).encode()
        bare = json.dumps({"keys": self.published, "padding": ""}).encode()
        if self.document_bytes < len(bare):
            raise ValueError(f"the keys alone take {len(bare)} bytes")
        padding = "x" * (self.document_bytes - len(bare))
        body = json.dumps({"keys": self.published, "padding": padding}).encode()
        assert len(body) == self.document_bytes
        return body

    def publish(self, *keys: SigningKey, with_alg: bool = True) -> None:
        self.published = [key.jwk(with_alg=with_alg) for key in keys]

    def token(
        self,
        alg: str = "EdDSA",
        *,
        key: SigningKey | None = None,
        lifetime: int = 900,
        headers: dict[str, Any] | None = None,
        with_kid: bool = True,
        **claims: Any,
    ) -> str:
        """A token shaped like Better Auth's JWT plugin makes them; `with_kid=False` leaves out the
        header's `kid`, as some issuers do."""
        key = key or self.keys[alg]
        now = int(time.time())
        payload = {
            "sub": "alice",
            "id": "alice",
            "email": "alice@example.com",
            "name": "Alice",
            "emailVerified": True,
            "iat": now,
            "exp": now + lifetime,
            "iss": self.url,
            "aud": self.url,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"kid": key.kid} if with_kid else {}
        return jwt.encode(payload, key.private_key, algorithm=key.alg, headers={**header, **(headers or {})})


def server_tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and localhost, with a certificate from a fresh test CA;
    and the CA's certificate file, for a client that is to trust it (SSL_CERT_FILE)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test issuer CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain_file, key_file = directory / "ca.pem", directory / "chain.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    return context, ca_file
