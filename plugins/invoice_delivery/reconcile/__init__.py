"""Reconcile deliveries with what the gateways report: receipts, status polls, expiry, fallback."""
