"""Small helpers for service tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from lxml import etree

UWS_DATA = Path(__file__).resolve().parents[1] / "data" / "uws"
XLINK_URL = "http://www.ivoa.net/xml/Xlink/xlink.xsd"


class _LocalXlink(etree.Resolver):
    """Resolve the XLink schema that UWS-1.1.xsd imports to the local copy."""

    def resolve(self, url: str, pubid: str, context: Any) -> Any:
        if url == XLINK_URL or url.endswith("xlink.xsd"):
            return self.resolve_filename(str(UWS_DATA / "xlink.xsd"), context)
        return None


def uws_schema() -> etree.XMLSchema:
    """The official UWS 1.1 schema, validated offline."""
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalXlink())
    return etree.XMLSchema(etree.parse(str(UWS_DATA / "UWS-1.1.xsd"), parser))


def assert_valid(schema: etree.XMLSchema, document: bytes) -> etree._Element:
    """Parse and validate a UWS document; return its root."""
    root = etree.fromstring(document)
    if not schema.validate(root):
        raise AssertionError(f"invalid UWS document: {schema.error_log}\n{document[:2000]!r}")
    return root


def create_job(client: TestClient, data: dict | list | None = None, headers: dict | None = None,
               params: dict | None = None, files: dict | None = None) -> str:
    """POST /async (``files``: multipart file parts); return the new job's id."""
    data = {"POS": "150.1,2.2", "SIZE": "0.01"} if data is None else data
    response = client.post("/async", data=data, params=params, files=files,
                           headers=headers, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[-1]


def phase(client: TestClient, job_id: str, headers: dict | None = None) -> str:
    response = client.get(f"/async/{job_id}/phase", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def wait_for(client: TestClient, job_id: str, phases: tuple[str, ...], timeout: float = 30.0,
             headers: dict | None = None) -> str:
    """Poll until the job reaches one of ``phases``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = phase(client, job_id, headers)
        if current in phases:
            return current
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {current}, expected {phases}")


def in_app(client: TestClient, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine function in the app's event loop."""
    return client.blocking_portal.call(lambda: fn(*args, **kwargs))


def service(client: TestClient) -> Any:
    return client.app.state.service
