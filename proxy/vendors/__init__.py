"""Vendor adapters, one module per protocol, and the registry of adapter types.

A rule file names an adapter by its ``type``; see :mod:`proxy.vendors.base`
for the contract every adapter follows.
"""

from __future__ import annotations

from .base import Adapter
from .file import JSONLFile
from .ga4 import GA4
from .linkedin import LinkedInCAPI
from .meta import MetaCAPI
from .pinterest import PinterestCAPI
from .reddit import RedditCAPI
from .snapchat import SnapchatCAPI
from .tiktok import TikTokEventsAPI
from .webhook import Webhook

__all__ = ["ADAPTERS", "Adapter"]

ADAPTERS: dict[str, type[Adapter]] = {
    cls.type: cls
    for cls in (
        JSONLFile,
        Webhook,
        MetaCAPI,
        GA4,
        TikTokEventsAPI,
        SnapchatCAPI,
        PinterestCAPI,
        RedditCAPI,
        LinkedInCAPI,
    )
}
