"""The Stripe SDK's client, set from the settings (another endpoint when ``stripe_api_base`` is set)."""

from __future__ import annotations

import stripe
from stripe._base_address import BaseAddresses

from infra.settings import Settings


def stripe_client(settings: Settings) -> stripe.StripeClient | None:
    """``None`` while billing is not configured (no secret key)."""
    if settings.stripe_secret_key is None:
        return None
    base: BaseAddresses | None = None
    if settings.stripe_api_base:
        base = {"api": settings.stripe_api_base, "meter_events": settings.stripe_api_base}
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(), base_addresses=base, max_network_retries=2
    )
