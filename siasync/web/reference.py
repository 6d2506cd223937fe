"""``/schema``: the API reference as a plain page, rendered by the server from the OpenAPI description.

No viewer is loaded from a CDN (unreachable offline and in many observatory networks), and no
script runs: every route, its parameters, its body and its answers, from the same OpenAPI
document as ``/schema/openapi.json`` and ``/schema/openapi.yaml``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

_METHODS = ("get", "post", "put", "delete", "patch")


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: ``string``, ``one of A, B``, ``integer ≥ 0``, ``list of string``."""
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    words = str(schema.get("type", "any"))
    if "format" in schema:
        words += f" ({schema['format']})"
    if "minimum" in schema:
        words += f" ≥ {schema['minimum']}"
    return words


def _parameter(name: str, where: str, schema: dict[str, Any], description: str | None) -> dict[str, str]:
    example = (schema.get("items", schema).get("examples") or [None])[0]
    return {"name": name, "in": where, "type": _type(schema), "description": description or "",
            "example": "" if example is None else str(example)}


def operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of an OpenAPI document, by path, in a shape the template lists."""
    out = []
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [_parameter(p["name"], p["in"], p.get("schema", {}), p.get("description"))
                      for p in op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {})
            form = next(iter(body.values()), {}).get("schema", {}).get("properties", {})
            multipart = body.get("multipart/form-data", {}).get("schema", {}).get("properties", {})
            fields = [_parameter(n, "body", s, s.get("description")) for n, s in {**form, **multipart}.items()]
            answers = [{"status": status, "description": r.get("description", ""),
                        "types": ", ".join(r.get("content", {}))} for status, r in op.get("responses", {}).items()]
            out.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                        "anchor": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                        "parameters": params, "body": fields, "body_types": ", ".join(body), "answers": answers})
    return out


class ReferencePage(OpenAPIRenderPlugin):
    """The OpenAPI description as one self-contained HTML page (served at ``/schema``)."""

    def __init__(self) -> None:
        super().__init__(path="/")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        template = request.app.template_engine.get_template("reference.html")
        return template.render(info=openapi_schema.get("info", {}), operations=operations(openapi_schema)).encode()
