"""A small HTTP client for the web UI's tests: raw http.client, a cookie jar of one, the CSRF token of the session.

Only the standard library, so what goes on the wire (Host, Origin, Sec-Fetch-Site, cookies) is exactly
what each test says.
"""

from __future__ import annotations

import http.client
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class UiClient:
    port: int
    api_token: str
    cookie: str | None = None  # "name=value"
    csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        cookie: bool = True,
        host: str | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = {"Host": host or f"127.0.0.1:{self.port}"}
            if cookie and self.cookie:
                sent["Cookie"] = self.cookie
            sent.update(headers or {})
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, cookies)
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post_form(self, path: str, fields: dict[str, str], *, csrf: bool = True, **kw: Any) -> Answer:
        import urllib.parse

        values = dict(fields)
        if csrf and self.csrf:
            values.setdefault("csrf", self.csrf)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{self.port}"}
        headers.update(kw.pop("headers", {}))
        return self.request("POST", path, body=urllib.parse.urlencode(values).encode(), headers=headers, **kw)

    def post_multipart(self, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> Answer:
        boundary = uuid.uuid4().hex
        parts = []
        values = {"csrf": self.csrf or "", **fields}  # the token first, as the page's form has it
        for name, value in values.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, filename, data in files:
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            )
            parts.append(head.encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": f"http://127.0.0.1:{self.port}",
        }
        return self.request("POST", path, body=body, headers=headers)

    def api(self, method: str, path: str, body: bytes | None = None, token: str | None = "default") -> Answer:
        headers = {"Content-Type": "application/json"}
        token = self.api_token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.request(method, path, body=body, headers=headers, cookie=False)

    def mint(self) -> str:
        """A one-time login token, from the bearer-token API as `swapmeet ui` gets it."""
        answer = self.api("POST", "/v1/ui/token")
        assert answer.status == 201, answer.text
        url = json.loads(answer.body)["url"]
        assert url.startswith(f"http://127.0.0.1:{self.port}/ui/login#")
        return url.split("#", 1)[1]

    def login(self) -> Answer:
        answer = self.post_form("/ui/login", {"token": self.mint()}, csrf=False)
        assert answer.status == 303, answer.text
        self.cookie = answer.cookies[0].split(";", 1)[0]
        page = self.get("/ui/market")
        assert page.status == 200, page.text
        found = CSRF.search(page.text)
        assert found
        self.csrf = found.group(1)
        return answer
