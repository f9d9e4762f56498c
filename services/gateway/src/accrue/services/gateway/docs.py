"""/docs: Swagger UI over /openapi.json, from the swagger-ui-bundle-v2 wheel's static files.

Nothing is fetched from a CDN and the online validator badge is off, so the page works on a
machine without internet access. URLs are relative, so it also works behind a path prefix.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

ASSETS_PATH = "/docs/assets"

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      displayRequestDuration: true
    }});
  </script>
</body>
</html>
"""


def docs_page(title: str) -> str:
    """The HTML of /docs."""
    return _PAGE.format(title=title)


def swagger_ui_directory() -> Path:
    """The installed Swagger UI's static files (the newest bundled version)."""
    vendor = Path(str(resources.files("swagger_ui_bundle").joinpath("vendor")))
    candidates = sorted(vendor.glob("swagger-ui-*"))
    if not candidates:
        raise RuntimeError(f"no Swagger UI under {vendor}; is swagger-ui-bundle-v2 installed?")
    return candidates[-1]
