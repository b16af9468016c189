-- Service orders imported from the sharing platform: what was billed, to be
-- reconciled against what was measured. One row per order id; re-importing an
-- order updates it in place (imports are idempotent).
CREATE TABLE service_orders (
    order_id      text PRIMARY KEY CHECK (length(order_id) BETWEEN 1 AND 200),
    instrument_id text NOT NULL REFERENCES instruments (id),
    customer_org  text NOT NULL,
    external      boolean NOT NULL,
    purpose       text NOT NULL DEFAULT '',
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    billed_hours  numeric(12, 3) NOT NULL CHECK (billed_hours >= 0),
    amount_yuan   numeric(14, 2) NOT NULL CHECK (amount_yuan >= 0),
    imported_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX service_orders_instrument_window ON service_orders (instrument_id, starts_at);
