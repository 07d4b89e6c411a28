"""Local gateway simulator: the channel gateways' contracts over real HTTP on loopback.

Production points the Airflow connections at the real gateways; tests, the demo and the
benchmark point them at this service. Start it with
``python -m invoice_delivery.simulator --port 8025``, or from Python with
:class:`~invoice_delivery.simulator.process.SimulatorProcess`.
"""

from invoice_delivery.simulator.app import create_app
from invoice_delivery.simulator.config import (
    FaultConfig,
    MailboxConfig,
    ReceiptConfig,
    SimulatorConfig,
    SimulatorConfigError,
    SmsConfig,
    load_config,
)
from invoice_delivery.simulator.process import SimulatorProcess, SimulatorStartError

__all__ = [
    "FaultConfig",
    "MailboxConfig",
    "ReceiptConfig",
    "SimulatorConfig",
    "SimulatorConfigError",
    "SimulatorProcess",
    "SimulatorStartError",
    "SmsConfig",
    "create_app",
    "load_config",
]
