-- The biller's side (schema billing) and the delivery ledger (schema delivery).
-- Money is numeric without a fixed scale, never floating point: the source's exact value is kept,
-- so validation can reject an amount with more than two decimals instead of a column rounding it.

CREATE SCHEMA IF NOT EXISTS billing;
CREATE SCHEMA IF NOT EXISTS delivery;

-- ---------------------------------------------------------------------------------------------
-- billing: written by the biller and by the UBL ingest, read by the pipeline.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE billing.seller (
    seller_id       text PRIMARY KEY,          -- stable key: org number or endpoint id, scheme-prefixed
    name            text NOT NULL,
    country         char(2) NOT NULL,
    org_number      text,
    vat_number      text,
    peppol_id       text,                      -- "scheme:value", e.g. "0007:5560000000"
    bankgiro        text,
    plusgiro        text,
    iban            text,
    -- OCR reference scheme: 'luhn' (check digit) or 'luhn_length' (length digit, then check digit).
    ocr_variant     text NOT NULL DEFAULT 'luhn' CHECK (ocr_variant IN ('luhn', 'luhn_length')),
    street          text,
    postal_code     text,
    city            text
);

CREATE TABLE billing.customer (
    customer_id         text PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('person', 'business')),
    name                text NOT NULL,
    personal_number     text,                  -- Swedish personnummer, 12 digits, persons only
    org_number          text,
    vat_number          text,
    peppol_id           text,                  -- "scheme:value"
    locale              text NOT NULL DEFAULT 'sv',
    time_zone           text NOT NULL DEFAULT 'Europe/Stockholm',
    email               text,
    mobile              text,                  -- as the biller stored it; normalised by validation
    push_token          text,
    street              text,
    postal_code         text,
    city                text,
    country             char(2),
    -- Channels in the customer's order of preference, and the channels consented to.
    channel_preferences text[] NOT NULL DEFAULT '{}',
    consents            text[] NOT NULL DEFAULT '{}',
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.invoice (
    invoice_id      bigserial PRIMARY KEY,
    source          text NOT NULL CHECK (source IN ('ubl', 'generator', 'billing')),
    source_key      text NOT NULL,             -- natural key within the source; makes ingest idempotent
    source_file     text,
    seller_id       text NOT NULL REFERENCES billing.seller,
    -- The biller's data as delivered: no NOT NULL or foreign key on the fields validation checks, so
    -- a bad row reaches the pipeline and is quarantined with a reason instead of failing the load.
    customer_id     text,
    invoice_number  text,
    document_type   text NOT NULL CHECK (document_type IN ('invoice', 'credit_note')),
    type_code       text,                      -- UNCL1001: 380 invoice, 381 credit note, 384 correction
    issue_date      date,
    due_date        date,
    currency        text,
    line_net_total  numeric,                   -- sum of line net amounts as the document states it
    allowance_total numeric NOT NULL DEFAULT 0, -- document-level allowances
    charge_total    numeric NOT NULL DEFAULT 0, -- document-level charges
    net_total       numeric,   -- tax exclusive amount
    vat_total       numeric,
    gross_total     numeric,   -- tax inclusive amount
    prepaid         numeric NOT NULL DEFAULT 0,
    rounding        numeric NOT NULL DEFAULT 0,
    payable         numeric,
    ocr_reference   text,                      -- payment reference (Swedish OCR when Luhn-valid)
    buyer_reference text,
    payment_account text,                      -- the account the payment goes to, as printed
    note            text,
    payment_terms   text,                      -- free-text terms (EN 16931 BT-20): may replace a due date
    ready_at        timestamptz NOT NULL,      -- when the biller released the invoice for delivery
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, source_key)
);
CREATE INDEX invoice_ready_at_idx ON billing.invoice (ready_at);

CREATE TABLE billing.invoice_line (
    invoice_id      bigint NOT NULL REFERENCES billing.invoice ON DELETE CASCADE,
    line_no         int NOT NULL,
    line_id         text,
    description     text NOT NULL,
    quantity        numeric NOT NULL,
    unit_code       text,
    unit_price      numeric NOT NULL,
    net_amount      numeric NOT NULL,
    vat_category    text NOT NULL,             -- UNCL5305: S, Z, E, AE, K, G, O, L, M
    vat_rate        numeric NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

-- The VAT breakdown as the document states it (one row per category and rate).
CREATE TABLE billing.invoice_vat (
    invoice_id      bigint NOT NULL REFERENCES billing.invoice ON DELETE CASCADE,
    vat_category    text NOT NULL,
    vat_rate        numeric NOT NULL,
    taxable_amount  numeric NOT NULL,
    tax_amount      numeric NOT NULL,
    PRIMARY KEY (invoice_id, vat_category, vat_rate)
);

-- ---------------------------------------------------------------------------------------------
-- delivery: the ledger. Written only by the pipeline.
-- ---------------------------------------------------------------------------------------------

-- One row per invoice taken into the pipeline: where the invoice as a whole stands.
CREATE TABLE delivery.document (
    invoice_id      bigint PRIMARY KEY REFERENCES billing.invoice,
    status          text NOT NULL CHECK (status IN (
                        'extracted', 'quarantined', 'routed', 'unroutable',
                        'in_progress', 'delivered', 'failed', 'cancelled')),
    reason          text,
    purpose         text CHECK (purpose IN ('payment_demand', 'informational')),
    plan            jsonb,                     -- [{"channel", "reason"}, ...] first choice first
    plan_position   int,                       -- index into plan of the current attempt's channel
    first_run_id    text NOT NULL,
    last_run_id     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX document_status_idx ON delivery.document (status);

-- A unit of work: the invoices one mapped task instance handles at every stage.
CREATE TABLE delivery.batch (
    batch_id        bigserial PRIMARY KEY,
    dag_id          text NOT NULL,
    run_id          text NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_end    timestamptz NOT NULL,
    size            int NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_run_idx ON delivery.batch (dag_id, run_id);

CREATE TABLE delivery.batch_item (
    batch_id        bigint NOT NULL REFERENCES delivery.batch ON DELETE CASCADE,
    invoice_id      bigint NOT NULL REFERENCES billing.invoice,
    PRIMARY KEY (batch_id, invoice_id)
);
CREATE INDEX batch_item_invoice_idx ON delivery.batch_item (invoice_id);

-- One row per invoice x channel attempt.
CREATE TABLE delivery.delivery (
    delivery_id         bigserial PRIMARY KEY,
    invoice_id          bigint NOT NULL REFERENCES billing.invoice,
    channel             text NOT NULL CHECK (channel IN ('mailbox', 'sms', 'push', 'email', 'einvoice', 'paper')),
    attempt             int NOT NULL,
    plan_position       int NOT NULL,
    state               text NOT NULL CHECK (state IN (
                            'planned', 'rendered', 'sending', 'accepted',
                            'delivered', 'failed', 'expired', 'cancelled')),
    reason              text,
    idempotency_key     text NOT NULL UNIQUE,
    gateway_message_id  text,
    content_hash        text,                  -- SHA-256 (hex) of the rendered message
    not_before          timestamptz,           -- quiet hours: do not send before this time
    expires_at          timestamptz,           -- deadline for a final receipt
    batch_id            bigint REFERENCES delivery.batch,
    created_run_id      text NOT NULL,
    sent_run_id         text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    claimed_at          timestamptz,
    accepted_at         timestamptz,
    final_at            timestamptz,
    UNIQUE (invoice_id, channel, attempt)
);
CREATE INDEX delivery_state_idx ON delivery.delivery (state);
CREATE INDEX delivery_batch_idx ON delivery.delivery (batch_id);
CREATE UNIQUE INDEX delivery_gateway_message_idx
    ON delivery.delivery (channel, gateway_message_id) WHERE gateway_message_id IS NOT NULL;

-- The rendered message. Kept apart from the ledger row so bodies can be purged before the
-- retention period of the trail ends while the hash stays in delivery.delivery.
CREATE TABLE delivery.message (
    delivery_id     bigint PRIMARY KEY REFERENCES delivery.delivery,
    content_type    text NOT NULL,
    subject         text,
    body            bytea NOT NULL,
    segments        int,                       -- SMS parts, for cost
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Raw receipts from the gateways, stored before any processing.
CREATE TABLE delivery.receipt (
    receipt_id          bigserial PRIMARY KEY,
    channel             text NOT NULL,
    webhook_id          text,                  -- the sender's receipt id: replay detection
    gateway_message_id  text,
    reference           text,                  -- our idempotency key echoed back, where the gateway does
    status              text NOT NULL,         -- normalised: delivered, failed, expired, pending, opened
    gateway_status      text,                  -- the gateway's own code, e.g. 1001
    occurred_at         timestamptz,
    payload             jsonb NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, webhook_id)
);
CREATE INDEX receipt_message_idx ON delivery.receipt (channel, gateway_message_id);

-- What reconciliation made of each receipt; a receipt without a row here is still to be matched.
CREATE TABLE delivery.receipt_outcome (
    receipt_id      bigint PRIMARY KEY REFERENCES delivery.receipt,
    delivery_id     bigint REFERENCES delivery.delivery,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'anomaly', 'ignored')),
    note            text,
    processed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE delivery.quarantine (
    quarantine_id   bigserial PRIMARY KEY,
    invoice_id      bigint NOT NULL REFERENCES billing.invoice,
    run_id          text NOT NULL,
    reasons         jsonb NOT NULL,            -- [{"rule", "column", "value", "message"}], personal data masked
    source_hash     text,                      -- fingerprint of the invoice as validated
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    released_at     timestamptz,
    released_run_id text
);
CREATE UNIQUE INDEX quarantine_open_idx ON delivery.quarantine (invoice_id) WHERE released_at IS NULL;

-- The full Great Expectations result of each validated batch, for people to read.
CREATE TABLE delivery.validation_result (
    batch_id        bigint PRIMARY KEY REFERENCES delivery.batch,
    run_id          text NOT NULL,
    validated       int NOT NULL,
    passed          int NOT NULL,
    quarantined     int NOT NULL,
    by_rule         jsonb NOT NULL,
    result          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Cached mailbox recipient matches (the gateway's usermatch), so each run does not ask again.
CREATE TABLE delivery.mailbox_match (
    personal_number text PRIMARY KEY,
    has_mailbox     boolean NOT NULL,
    checked_at      timestamptz NOT NULL
);

-- The audit trail. Append-only: UPDATE, DELETE and TRUNCATE are rejected by triggers below.
CREATE TABLE delivery.audit_event (
    event_id        bigserial PRIMARY KEY,
    occurred_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_type      text NOT NULL,
    invoice_id      bigint,
    delivery_id     bigint,
    channel         text,
    from_state      text,
    to_state        text,
    details         jsonb NOT NULL DEFAULT '{}',
    dag_id          text,
    run_id          text,
    task_id         text,
    try_number      int,
    actor           text,                      -- who asked, for manual actions
    reason          text
);
CREATE INDEX audit_event_invoice_idx ON delivery.audit_event (invoice_id, event_id);
CREATE INDEX audit_event_time_idx ON delivery.audit_event (occurred_at);

CREATE FUNCTION delivery.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table %.% is append-only: % is not allowed', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON delivery.audit_event
    FOR EACH ROW EXECUTE FUNCTION delivery.reject_change();
CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON delivery.audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION delivery.reject_change();
CREATE TRIGGER receipt_append_only
    BEFORE UPDATE OR DELETE ON delivery.receipt
    FOR EACH ROW EXECUTE FUNCTION delivery.reject_change();
CREATE TRIGGER receipt_no_truncate
    BEFORE TRUNCATE ON delivery.receipt
    FOR EACH STATEMENT EXECUTE FUNCTION delivery.reject_change();
