"""The simulator stays on loopback unless a container deployment opts out explicitly."""

import pytest
from pydantic import ValidationError

from invoice_delivery.simulator.config import SimulatorConfig

CONTAINER_RECEIPTS = {"receipts": {"url": "http://airflow-apiserver:8080/invoice-delivery/receipts/sms"}}


def test_non_loopback_rejected_by_default():
    with pytest.raises(ValidationError, match="host '0.0.0.0' is not a loopback address"):
        SimulatorConfig(host="0.0.0.0")
    with pytest.raises(ValidationError, match="sms.receipts.url .* is not on a loopback address"):
        SimulatorConfig(sms=CONTAINER_RECEIPTS)


def test_container_mode_allows_service_addresses():
    config = SimulatorConfig(host="0.0.0.0", sms=CONTAINER_RECEIPTS, allow_non_loopback=True)

    assert config.host == "0.0.0.0"
    assert config.sms.receipts.url.startswith("http://airflow-apiserver:8080/")
