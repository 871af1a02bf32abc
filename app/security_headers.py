"""Headers that tell a browser what a response is and what it may do.

`X-Content-Type-Options: nosniff` goes on every response, so an artifact or a problem is never
read as some other type. The dashboard's pages and downloaded artifacts (report.html is a
whole page) carry a Content-Security-Policy: the dashboard runs its own scripts only (the
inline ones by hash) and talks to this API only; an artifact runs nothing at all."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# report.html: its own <style> and data: images (the charts), nothing else; sandboxed, so even
# a script that found its way in would not run.
ARTIFACT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'; sandbox"
)


def _inline_script_hashes(pages: list[Path]) -> list[str]:
    hashes = []
    for page in pages:
        for script in re.findall(r"<script>(.*?)</script>", page.read_text(), flags=re.S):
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            hashes.append(f"'sha256-{digest}'")
    return sorted(set(hashes))


def dashboard_policy(pages: list[Path]) -> str:
    scripts = " ".join(["'self'", *_inline_script_hashes(pages)])
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class NoSniffMiddleware:
    """Adds X-Content-Type-Options: nosniff to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h
                    for h in message.get("headers", [])
                    if h[0].lower() != b"x-content-type-options"
                ]
                message = {
                    **message,
                    "headers": [*headers, (b"x-content-type-options", b"nosniff")],
                }
            await send(message)

        await self.app(scope, receive, send_with_header)
