"""EmailClient against the simulator's SMTP server (smtplib) and its HTTP lookup route."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_test_support import EMAIL_AUTH, free_port, mime_message, simulator_config

from invoice_delivery.channels import GatewayConfig, GatewayError
from invoice_delivery.channels.email import EmailClient, EmailMessage, message_id_header
from invoice_delivery.simulator import SimulatorProcess


def email_client(sim: SimulatorProcess, **overrides) -> EmailClient:
    settings = {
        "login": EMAIL_AUTH[0],
        "password": EMAIL_AUTH[1],
        "extra": {"lookup_url": sim.url},
        "max_attempts": 3,
        **overrides,
    }
    return EmailClient(GatewayConfig(base_url=f"smtp://{sim.host}:{sim.smtp_port}", **settings))


def message(delivery_id: int = 1, to: str = "kund@example.se") -> EmailMessage:
    key = f"inv-{delivery_id}-email-1"
    return EmailMessage(delivery_id, key, "faktura@example.com", to, mime_message(key, to))


def email_records(control) -> list[dict]:
    return control.get("/_sim/messages", params={"channel": "email"}).json()


def test_message_id_header_carries_key() -> None:
    assert message_id_header("inv-1-email-1") == "<inv-1-email-1@invoice-delivery>"


def test_send_accepted_with_message_id(sim, control) -> None:
    [outcome] = asyncio.run(email_client(sim).send([message()]))

    assert outcome.accepted is True
    assert outcome.message_id == "inv-1-email-1@invoice-delivery"
    [record] = email_records(control)
    assert record["message_id"] == outcome.message_id
    assert record["body"]["rcpt_to"] == ["kund@example.se"]
    assert record["body"]["has_pdf_attachment"] is True


def test_send_many_over_few_connections(sim, control, channel_stats) -> None:
    messages = [message(number, to=f"kund{number}@example.se") for number in range(20)]

    outcomes = asyncio.run(email_client(sim, concurrency=3).send(messages))

    assert [outcome.delivery_id for outcome in outcomes] == list(range(20))
    assert all(outcome.accepted for outcome in outcomes)
    assert len(email_records(control)) == 20
    assert channel_stats("email")["requests"] == 20


def test_send_without_login_on_loopback(sim, control) -> None:
    [outcome] = asyncio.run(email_client(sim, login=None, password=None).send([message()]))

    assert outcome.accepted is True


def test_duplicate_key_returns_same_id(sim, channel_stats) -> None:
    client = email_client(sim)

    [first] = asyncio.run(client.send([message()]))
    [again] = asyncio.run(client.send([message()]))

    assert again.accepted is True
    assert again.message_id == first.message_id
    assert channel_stats("email")["duplicates_offered"] == 1


def test_rejected_recipient_has_smtp_reason(sim, set_faults) -> None:
    set_faults("email", {"reject_recipients": ["gone@example.se"]})

    outcomes = asyncio.run(email_client(sim).send([message(1, to="gone@example.se"), message(2)]))

    assert outcomes[0].accepted is False
    assert outcomes[0].reason.startswith("e-mail RCPT TO failed with SMTP 550 5.1.1")
    assert outcomes[1].accepted is True


def test_451_retried_then_accepted(sim, set_faults, channel_stats) -> None:
    set_faults("email", {"rate_429": 1.0, "max_request_faults": 1})

    [outcome] = asyncio.run(email_client(sim).send([message()]))

    assert outcome.accepted is True
    assert channel_stats("email")["faults_injected"] == {"rate_429": 1}


def test_persistent_451_unresolved(sim, set_faults, caplog) -> None:
    set_faults("email", {"error_5xx_rate": 1.0})

    [outcome] = asyncio.run(email_client(sim, max_attempts=2).send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)
    assert "1 of 1 e-mail submissions unresolved" in caplog.text


def test_timeout_after_accept_then_lookup(sim, set_faults) -> None:
    set_faults("email", {"timeout_rate": 1.0, "timeout_hold_s": 1.0, "timeout_after_accept": True})
    client = email_client(sim, timeout_s=0.3, max_attempts=1)

    [outcome] = asyncio.run(client.send([message()]))
    found = asyncio.run(client.lookup(["inv-1-email-1"]))

    assert (outcome.accepted, outcome.reason) == (False, None)
    assert found == {"inv-1-email-1": "inv-1-email-1@invoice-delivery"}


def test_reply_lost_after_data_not_resent(sim, set_faults, channel_stats) -> None:
    # The server records the message, then delays its reply past the client's timeout, once.
    set_faults("email", {"timeout_rate": 1.0, "timeout_hold_s": 1.0, "timeout_after_accept": True,
                         "max_request_faults": 1})
    client = email_client(sim, timeout_s=0.3, max_attempts=3)

    [outcome] = asyncio.run(client.send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)
    stats = channel_stats("email")
    assert stats["requests"] == 1
    assert stats["duplicates_offered"] == 0


def test_connect_refused_retried_in_place(caplog) -> None:
    config = GatewayConfig(base_url=f"smtp://127.0.0.1:{free_port()}", max_attempts=2, timeout_s=1)

    [outcome] = asyncio.run(EmailClient(config).send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)
    assert "[Try 1 of 2]; retrying" in caplog.text


def test_wrong_password_raises_gateway_error(sim) -> None:
    with pytest.raises(GatewayError, match="535"):
        asyncio.run(email_client(sim, password="wrong").send([message()]))


def test_unreachable_server_unresolved(sim) -> None:
    config = GatewayConfig(base_url=f"smtp://127.0.0.1:{free_port()}", max_attempts=2, timeout_s=1)

    [outcome] = asyncio.run(EmailClient(config).send([message()]))

    assert (outcome.accepted, outcome.message_id, outcome.reason) == (False, None, None)


def test_foreign_message_id_raises_before_sending(sim, control) -> None:
    wrong = EmailMessage(9, "inv-9-email-1", "faktura@example.com", "kund@example.se", mime_message("other-key"))

    with pytest.raises(ValueError, match="delivery 9"):
        asyncio.run(email_client(sim).send([message(), wrong]))

    assert email_records(control) == []


def test_lookup_found_and_not_found(sim) -> None:
    client = email_client(sim)
    asyncio.run(client.send([message()]))

    found = asyncio.run(client.lookup(["inv-1-email-1", "inv-2-email-1"]))

    assert found == {"inv-1-email-1": "inv-1-email-1@invoice-delivery", "inv-2-email-1": None}


def test_lookup_wrong_password_raises(sim) -> None:
    client = email_client(sim, password="wrong")

    with pytest.raises(GatewayError, match="401"):
        asyncio.run(client.lookup(["inv-1-email-1"]))


def test_lookup_needs_lookup_url(sim) -> None:
    client = email_client(sim, extra={})

    with pytest.raises(ValueError, match="lookup_url"):
        asyncio.run(client.lookup(["inv-1-email-1"]))


@pytest.mark.parametrize(
    ("base_url", "extra", "text"),
    [
        ("http://127.0.0.1:25", {}, "smtp://host:port"),
        ("smtp://mail.example.com:587", {}, "plain text"),
    ],
)
def test_invalid_connection_rejected(base_url, extra, text) -> None:
    config = GatewayConfig(base_url=base_url, login="user", password="secret", extra=extra)

    with pytest.raises(ValueError, match=text):
        EmailClient(config)


# --- STARTTLS with a certificate from a test CA ----------------------------------------------


def _write_test_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a test CA and a server certificate for 127.0.0.1 signed by it; return (ca, cert, key)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("invoice-delivery test CA"))
        .issuer_name(name("invoice-delivery test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_simulator(tmp_path_factory) -> Iterator[tuple[SimulatorProcess, Path]]:
    """A simulator whose SMTP server offers STARTTLS and requires AUTH; yields it and the CA file."""
    ca_file, cert_file, key_file = _write_test_certificates(tmp_path_factory.mktemp("tls"))
    config = simulator_config(
        email={"tls_cert_file": str(cert_file), "tls_key_file": str(key_file), "auth_required": True}
    )
    with SimulatorProcess(free_port(), config) as process:
        yield process, ca_file


def test_starttls_and_auth_accepted(tls_simulator) -> None:
    sim, ca_file = tls_simulator
    client = email_client(sim, extra={"starttls": True, "ca_file": str(ca_file), "lookup_url": sim.url})

    [outcome] = asyncio.run(client.send([message()]))

    assert outcome.accepted is True
    assert outcome.message_id == "inv-1-email-1@invoice-delivery"


def test_starttls_untrusted_certificate_raises(tls_simulator) -> None:
    sim, _ = tls_simulator
    client = email_client(sim, extra={"starttls": "true"})

    with pytest.raises(GatewayError, match="ca_file"):
        asyncio.run(client.send([message(2)]))


def test_auth_without_starttls_raises(tls_simulator) -> None:
    sim, _ = tls_simulator

    with pytest.raises(GatewayError, match="starttls"):
        asyncio.run(email_client(sim).send([message(3)]))
