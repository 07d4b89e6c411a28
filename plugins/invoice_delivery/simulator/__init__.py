"""Local gateway simulator: the channel gateways' contracts over real HTTP on loopback.

Production points the Airflow connections at the real gateways; tests, the demo and the
benchmark point them at this service. Start it with
``python -m invoice_delivery.simulator --port 8025 --smtp-port 8026``, or from Python with
:class:`~invoice_delivery.simulator.process.SimulatorProcess`. The e-mail channel is a real SMTP
server on its own port; every other channel is HTTP.
"""

from invoice_delivery.simulator.app import create_app
from invoice_delivery.simulator.config import (
    EinvoiceConfig,
    EmailConfig,
    FaultConfig,
    MailboxConfig,
    PaperConfig,
    PushConfig,
    ReceiptConfig,
    SimulatorConfig,
    SimulatorConfigError,
    SmsConfig,
    load_config,
)
from invoice_delivery.simulator.process import SimulatorProcess, SimulatorStartError

__all__ = [
    "EinvoiceConfig",
    "EmailConfig",
    "FaultConfig",
    "MailboxConfig",
    "PaperConfig",
    "PushConfig",
    "ReceiptConfig",
    "SimulatorConfig",
    "SimulatorConfigError",
    "SimulatorProcess",
    "SimulatorStartError",
    "SmsConfig",
    "create_app",
    "load_config",
]
