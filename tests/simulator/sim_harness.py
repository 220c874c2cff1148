"""Test harness for the simulator: real servers in threads, a callback receiver, a tiny client.

Nothing is mocked: the client below talks HTTP to the simulator, and the simulator's callbacks
travel over HTTP to the receiver, which records them. Every wait is bounded.

(A module of its own, not conftest.py, so test modules can import it by a unique name.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator import SimulatorConfig

SAMPLES = Path(__file__).resolve().parent.parent / "samples"  # tests/samples (see its README.md)
WAIT_S = 5.0
EAT = timezone(timedelta(hours=3), "EAT")


def load_sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


# --- servers ----------------------------------------------------------------------------------
class ServerThread:
    """A uvicorn server on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
        # and without it every keep-alive request waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"uvicorn-{self.port}")

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@dataclass
class Received:
    path: str
    body: Any
    at: float  # time.monotonic() when the receiver got it


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ResultCode": 0, "ResultDesc": "Success"})
    delay_s: float = 0.0


class Receiver:
    """A tiny client-side callback server that records what it receives."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._replies: dict[str, Reply] = {}
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self.server = ServerThread(app)

    @property
    def url(self) -> str:
        return self.server.url

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        path = request.url.path
        with self._lock:
            self._received.append(Received(path, body, time.monotonic()))
            reply = self._replies.get(path, Reply())
            self._lock.notify_all()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return JSONResponse(reply.body, status_code=reply.status)

    def reply(self, path: str, reply: Reply) -> None:
        with self._lock:
            self._replies[path] = reply

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._replies.clear()

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = WAIT_S) -> list[Received]:
        """Block until ``count`` callbacks reached ``path``; fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len([r for r in self._received if r.path == path]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [r.path for r in self._received]
                    raise AssertionError(f"timed out waiting for {count} x {path}; got {got}")
                self._lock.wait(remaining)
            return [r for r in self._received if r.path == path]


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT_S, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


# --- a minimal Daraja client for the tests ----------------------------------------------------
def encrypt_credential(password: str, cert_pem: bytes) -> str:
    """SecurityCredential as a client computes it: base64(RSA PKCS#1 v1.5(password))."""
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    return base64.b64encode(public_key.encrypt(password.encode(), padding.PKCS1v15())).decode()


class Daraja:
    """Talks to one simulator over HTTP the way a Daraja client would."""

    def __init__(self, base_url: str, config: SimulatorConfig, receiver: Receiver) -> None:
        self.base_url = base_url
        self.config = config
        self.receiver = receiver
        self.http = httpx.Client(base_url=base_url, timeout=5.0, trust_env=False)
        self._token: str | None = None
        self._credential: str | None = None
        # A per-client path segment in every callback URL: a late callback from an earlier
        # test can never be mistaken for one of this test's callbacks. Hex cannot spell any
        # of Safaricom's filtered words.
        self.tag = uuid.uuid4().hex[:10]

    def close(self) -> None:
        self.http.close()

    # auth
    def fetch_token(self, key: str | None = None, secret: str | None = None) -> httpx.Response:
        return self.http.get("/oauth/v1/generate", params={"grant_type": "client_credentials"},
                             auth=(key or self.config.consumer_key,
                                   secret or self.config.consumer_secret))

    def token_for(self, key: str, secret: str) -> str:
        """A token of another app of the same simulator (``SimulatorConfig.apps``)."""
        response = self.fetch_token(key, secret)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def token(self) -> str:
        if self._token is None:
            response = self.fetch_token()
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def forget_token(self) -> None:
        self._token = None

    def credential(self, password: str | None = None) -> str:
        cert = self.http.get("/sim/cert.pem").content
        if password is not None:
            return encrypt_credential(password, cert)
        if self._credential is None:
            self._credential = encrypt_credential(self.config.initiator_password, cert)
        return self._credential

    def post(self, path: str, body: Any, *, timeout: float | None = None,
             token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        kwargs: dict[str, Any] = {"json": body, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        return self.http.post(path, **kwargs)

    # callbacks, by route ("b2c/result") under this client's tag
    def path(self, route: str) -> str:
        return f"/cb/{self.tag}/{route}"

    def cb(self, route: str) -> str:
        return f"{self.receiver.url}{self.path(route)}"

    def wait_for(self, route: str, count: int = 1, timeout: float = WAIT_S) -> list[Received]:
        return self.receiver.wait_for(self.path(route), count, timeout)

    def received(self, route: str) -> list[Received]:
        return self.receiver.received(self.path(route))

    def reply(self, route: str, reply: Reply) -> None:
        self.receiver.reply(self.path(route), reply)

    # request bodies
    def b2c_body(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "OriginatorConversationID": f"po_{uuid.uuid4().hex[:12]}",
            "InitiatorName": self.config.initiator_name,
            "SecurityCredential": self.credential(),
            "CommandID": "BusinessPayment",
            "Amount": "100",
            "PartyA": self.config.short_code,
            "PartyB": "254705912645",
            "Remarks": "Driver share SHK3QX7T2M",
            "QueueTimeOutURL": self.cb("b2c/timeout"),
            "ResultURL": self.cb("b2c/result"),
            "Occassion": "fare",
        }
        body.update(overrides)
        return body

    def org_query_body(self, command_id: str, result_route: str, **extra: Any) -> dict[str, Any]:
        body = {
            "Initiator": self.config.initiator_name,
            "SecurityCredential": self.credential(),
            "CommandID": command_id,
            "PartyA": self.config.short_code,
            "IdentifierType": "4",
            "ResultURL": self.cb(f"{result_route}/result"),
            "QueueTimeOutURL": self.cb(f"{result_route}/timeout"),
            "Remarks": "OK",
            "Occasion": "status",
        }
        body.update(extra)
        return body

    def pay_b2c(self, **overrides: Any) -> tuple[dict[str, Any], httpx.Response]:
        body = self.b2c_body(**overrides)
        return body, self.post("/mpesa/b2c/v3/paymentrequest", body)

    def register_urls(self, version: str = "v2", response_type: str = "Completed") -> httpx.Response:
        return self.post(f"/mpesa/c2b/{version}/registerurl", {
            "ShortCode": self.config.short_code, "ResponseType": response_type,
            "ConfirmationURL": self.cb("c2b/confirm"), "ValidationURL": self.cb("c2b/validate"),
        })

    def simulate_c2b(self, amount: int = 200, bill_ref: str = "025", version: str = "v2",
                     **extra: Any) -> httpx.Response:
        body = {"ShortCode": self.config.short_code, "CommandID": "CustomerPayBillOnline",
                "Amount": amount, "Msisdn": "254708374149", "BillRefNumber": bill_ref, **extra}
        return self.post(f"/mpesa/c2b/{version}/simulate", body)

    def stk_password(self, timestamp: str, passkey: str | None = None,
                     short_code: str | None = None) -> str:
        """``base64(BusinessShortCode + passkey + Timestamp)``, computed the client's way."""
        raw = f"{short_code or self.config.short_code}{passkey or self.config.passkey}{timestamp}"
        return base64.b64encode(raw.encode()).decode()

    def stk_credentials(self, **overrides: Any) -> dict[str, Any]:
        timestamp = datetime.now(EAT).strftime("%Y%m%d%H%M%S")
        body = {"BusinessShortCode": self.config.short_code,
                "Password": self.stk_password(timestamp), "Timestamp": timestamp}
        body.update(overrides)
        return body

    def stk_body(self, **overrides: Any) -> dict[str, Any]:
        """An M-Pesa Express push to our paybill, shaped like the Daraja sample."""
        body = self.stk_credentials()
        body.update({
            "TransactionType": "CustomerPayBillOnline", "Amount": 1,
            "PartyA": "254708374149", "PartyB": self.config.short_code,
            "PhoneNumber": "254708374149", "CallBackURL": self.cb("stk/result"),
            "AccountReference": "025", "TransactionDesc": "Fare",
        })
        body.update(overrides)
        return body

    def stk_push(self, *, token: str | None = None, **overrides: Any) -> tuple[dict[str, Any], httpx.Response]:
        body = self.stk_body(**overrides)
        return body, self.post("/mpesa/stkpush/v1/processrequest", body, token=token)

    def stk_query(self, checkout_request_id: str, *, token: str | None = None,
                  **overrides: Any) -> httpx.Response:
        body = self.stk_credentials(CheckoutRequestID=checkout_request_id, **overrides)
        return self.post("/mpesa/stkpushquery/v1/query", body, token=token)

    def transaction_status(self, **ids: str) -> httpx.Response:
        return self.post("/mpesa/transactionstatus/v1/query",
                         self.org_query_body("TransactionStatusQuery", "status", **ids))

    def faults(self, *specs: dict[str, Any]) -> None:
        response = self.http.post("/sim/faults", json=list(specs))
        assert response.status_code == 201, response.text

    def sim_payments(self) -> dict[str, Any]:
        return self.http.get("/sim/payments").json()


