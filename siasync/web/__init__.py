"""The web layer: HTTP helpers, downloads, the OpenAPI description and the pages for people."""
