"""Webhook intake (``POST /webhooks/{source}``) and delivery to gRPC subscribers."""

from api_service.webhooks.delivery import SERVICE_NAME, WebhookServicer
from api_service.webhooks.intake import WebhookIntake
from api_service.webhooks.service import Webhooks
from api_service.webhooks.settings import WebhookSettings, WebhookSource
from api_service.webhooks.stats import Wakeup, WebhookStats
from api_service.webhooks.verify import Rejected, Verified, sign_standard, verify

__all__ = [
    "SERVICE_NAME",
    "Rejected",
    "Verified",
    "Wakeup",
    "WebhookIntake",
    "WebhookServicer",
    "WebhookSettings",
    "WebhookSource",
    "WebhookStats",
    "Webhooks",
    "sign_standard",
    "verify",
]
