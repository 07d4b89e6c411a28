"""Airflow plugin: serves the receipt webhooks from the api-server under ``/invoice-delivery``.

Airflow does not authenticate plugin apps; the receiver verifies every request's signature itself.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from invoice_delivery import settings
from invoice_delivery.reconcile.receiver import create_receiver_app, secret_from_connections

receipt_app = create_receiver_app(secret_from_connections, settings.invoice_db_target)


class InvoiceDeliveryPlugin(AirflowPlugin):
    name = "invoice_delivery"
    fastapi_apps = [
        {"app": receipt_app, "url_prefix": "/invoice-delivery", "name": "Invoice delivery receipt webhooks"},
    ]
