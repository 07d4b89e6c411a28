"""Bring invoices into the billing schema: Peppol UBL files and synthetic test data."""

from invoice_delivery.ingest.generator import GenerateReport, generate
from invoice_delivery.ingest.ubl import (
    IngestReport,
    InvalidValue,
    MalformedXml,
    MissingElement,
    NotUbl,
    RejectedFile,
    UblDocument,
    UblError,
    ingest_directory,
    ingest_files,
    parse_document,
)

__all__ = [
    "GenerateReport",
    "IngestReport",
    "InvalidValue",
    "MalformedXml",
    "MissingElement",
    "NotUbl",
    "RejectedFile",
    "UblDocument",
    "UblError",
    "generate",
    "ingest_directory",
    "ingest_files",
    "parse_document",
]
