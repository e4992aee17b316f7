"""The DANDI stand-in's REST API: a table of routes, each a pattern and the answer it gets.

A crafted asset id (see :meth:`DandiStandIn.add_asset`) is looked up before the table: like
a hostile server, the stand-in answers for it wherever the client's request lands.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from spikelab.testing._dandi_http import StandInHandler
from spikelab.testing._dandi_state import Asset, glob_regex, iso

_NOT_FOUND = {"detail": "Not found."}
_NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
_FORBIDDEN = {"detail": "You do not have permission to perform this action."}
#: Listing orders the archive accepts, and the asset field each sorts on.
_ORDER_KEYS = {"path": "path", "created": "created", "modified": "created", "size": "size"}


class ApiHandler(StandInHandler):
    """Answers ``/api/...`` requests from the table :data:`ROUTES`."""

    def _answer(self, fault: str | None) -> None:
        split = urlsplit(self.path)
        crafted = self.standin._crafted_route(split.path)
        if crafted is not None:  # a hostile server answers wherever the request lands
            target, download = crafted
            if download:
                self._redirect(target)
            else:
                self._send_json(200, self.standin._metadata(target))
            return
        for pattern, route in ROUTES:
            if match := pattern.match(split.path):
                route(self, match, split.query)
                return
        self._send_json(404, _NOT_FOUND)

    def _authorised(self, dandiset_id: str) -> bool:
        """Check embargo credentials; answer 401/403 and return False when they fail."""
        standin = self.standin
        if dandiset_id not in standin._embargoed:
            return True
        value = self.headers.get("Authorization")
        if value is None:
            self._send_json(401, _NO_CREDENTIALS)
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "token" or token.strip() != standin.token:
            self._send_json(403, _FORBIDDEN)
            return False
        return True

    # ---------------------------------------------------------------- routes

    def _version_asset(self, match: re.Match[str], query: str) -> None:
        """``/dandisets/{id}/versions/{version}/assets/{asset}/``: the metadata record."""
        asset = self.standin._asset(match["asset"])
        if (
            asset is None
            or asset.replaced
            or (asset.dandiset_id, asset.version) != (match["dandiset"], match["version"])
        ):
            self._send_json(404, _NOT_FOUND)
        elif self._authorised(asset.dandiset_id):
            self._send_json(200, self.standin._metadata(asset))

    def _asset_record(self, match: re.Match[str], query: str) -> None:
        """``/assets/{asset}/``: the metadata record."""
        asset = self.standin._asset(match["asset"])
        if asset is None:
            self._send_json(404, _NOT_FOUND)
        elif self._authorised(asset.dandiset_id):
            self._send_json(200, self.standin._metadata(asset))

    def _download(self, match: re.Match[str], query: str) -> None:
        """``/assets/{asset}/download/``: a redirect to the blob."""
        asset = self.standin._asset(match["asset"])
        if asset is None:
            self._send_json(404, _NOT_FOUND)
        elif self._authorised(asset.dandiset_id):
            self._redirect(asset)

    def _redirect(self, asset: Asset) -> None:
        """Answer a download request: 302 to the blob (400 for a Zarr asset, as DANDI does)."""
        if asset.zarr_id is not None:
            self._send_json(400, {"detail": "Zarr assets cannot be downloaded this way."})
            return
        self.send_response(302)
        self.send_header("Location", self.standin._presigned(asset))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _listing(self, match: re.Match[str], query: str) -> None:
        """``/dandisets/{id}/versions/{version}/assets/``: one page of the asset listing."""
        standin = self.standin
        dandiset_id = match["dandiset"]
        params = parse_qsl(query, keep_blank_values=True)
        values = dict(params)
        assets = standin._version_assets(dandiset_id, match["version"])
        if assets is None:
            self._send_json(404, _NOT_FOUND)
            return
        if not self._authorised(dandiset_id):
            return
        try:
            page_size = int(values.get("page_size", "100"))
            page = int(values.get("page", "1"))
        except ValueError:
            self._send_json(400, {"detail": "page and page_size must be integers."})
            return
        if not 1 <= page_size <= standin.page_size_max:
            self._send_json(
                400, {"page_size": [f"Ensure this value is between 1 and {standin.page_size_max}."]}
            )
            return
        assets = _selected(assets, values)
        pages = max(1, math.ceil(len(assets) / page_size))
        if not 1 <= page <= pages:
            self._send_json(404, {"detail": "Invalid page."})
            return

        def link(number: int) -> str | None:
            if not 1 <= number <= pages:
                return None
            kept = [(k, v) for k, v in params if k != "page"] + [("page", str(number))]
            return f"{self.server.origin}{match.string}?{urlencode(kept)}"

        chunk = assets[(page - 1) * page_size : page * page_size]
        # DANDI adds each asset's metadata record when asked (?metadata=true or 1)
        with_metadata = values.get("metadata", "").lower() in ("1", "true")
        results = [
            {
                "asset_id": a.asset_id,
                "blob": None if a.zarr_id else a.blob_id,
                "zarr": a.zarr_id,
                "path": a.path,
                "size": a.size,
                "created": iso(a.created),
                "modified": iso(a.created),
                **({"metadata": standin._metadata(a)} if with_metadata else {}),
            }
            for a in chunk
        ]
        self._send_json(
            200,
            {
                "count": len(assets),
                "next": link(page + 1),
                "previous": link(page - 1),
                "results": results,
            },
        )


def _selected(assets: list[Asset], values: dict[str, str]) -> list[Asset]:
    """The assets that ``glob`` and ``path`` keep, in the listing's ``order``."""
    if "glob" in values:
        pattern = glob_regex(values["glob"])
        assets = [a for a in assets if pattern.fullmatch(a.path)]
    if "path" in values:
        prefix = values["path"].lower()
        assets = [a for a in assets if a.path.lower().startswith(prefix)]
    order = values.get("order", "path")
    key = _ORDER_KEYS.get(order.lstrip("-"), "path")
    return sorted(assets, key=lambda a: (getattr(a, key), a.path), reverse=order.startswith("-"))


_Route = Callable[[ApiHandler, re.Match[str], str], None]
_DANDISET = r"^/api/dandisets/(?P<dandiset>[^/]+)/versions/(?P<version>[^/]+)"

#: The API's routes, tried in order: a path pattern and the handler method that answers it.
ROUTES: tuple[tuple[re.Pattern[str], _Route], ...] = (
    (re.compile(_DANDISET + r"/assets/$"), ApiHandler._listing),
    (re.compile(_DANDISET + r"/assets/(?P<asset>[^/]+)/$"), ApiHandler._version_asset),
    (re.compile(r"^/api/assets/(?P<asset>[^/]+)/$"), ApiHandler._asset_record),
    (re.compile(r"^/api/assets/(?P<asset>[^/]+)/download/$"), ApiHandler._download),
)
