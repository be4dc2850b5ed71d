"""A stand-in Better Auth issuer: real keys, a JWKS served over HTTP, tokens shaped like its JWT plugin's."""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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
        public = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        public["kid"] = self.kid
        if with_alg:
            public["alg"] = self.alg
        return public  # like Better Auth: no "use"


class Issuer:
    """Serves `/api/auth/jwks` on 127.0.0.1 and signs tokens with the keys it publishes."""

    def __init__(self, keys: dict[str, SigningKey]) -> None:
        self.keys = keys  # alg -> key; the same keys are reused across tests (RSA is slow to make)
        self.published: list[dict[str, Any]] = [key.jwk() for key in keys.values()]
        self.down = False
        # When set, the served document is padded (with a junk field) to exactly this many bytes.
        self.document_bytes: int | None = None
        self.requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests += 1
                if issuer.down:
                    self.send_error(503)
                    return
                if self.path != "/api/auth/jwks":
                    self.send_error(404)
                    return
                body = issuer.document()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

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
