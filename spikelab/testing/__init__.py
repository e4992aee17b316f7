"""Offline stand-ins for the remote services spikelab reads, for tests of your own flows.

:class:`DandiStandIn` serves a small DANDI archive (REST API plus blob store) on
127.0.0.1, with injectable faults; point ``api_base`` at its ``api_base``.

Examples
--------
>>> from spikelab.testing import DandiStandIn
>>> with DandiStandIn(tmp_path) as archive:  # doctest: +SKIP
...     asset_id = archive.add_asset("000123", "sub-01/sub-01_ecephys.nwb", nwb_bytes)
...     sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base)
"""

from __future__ import annotations

from spikelab.testing.dandi_archive import FAULT_KINDS, DandiStandIn, RecordedRequest, dandi_etag

__all__ = ["FAULT_KINDS", "DandiStandIn", "RecordedRequest", "dandi_etag"]
