-- The API's own tables and the registry columns its CRUD exposes.

-- API access tokens, stored only as the SHA-256 of a high-entropy random
-- token, so a leaked database does not leak working credentials. A role of
-- 'institution' is bound to exactly one institution; the others to none.
CREATE TABLE api_tokens (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role           text NOT NULL CHECK (role IN ('admin', 'auditor', 'institution')),
    institution_id text REFERENCES institutions (id),
    token_hash     bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    CHECK ((role = 'institution') = (institution_id IS NOT NULL))
);

-- What a sharing platform lists about an instrument. annual_quota_h NULL means
-- the category's standard hours (1,400 general, 800 specialised), so changing
-- the category changes the quota unless one was set explicitly.
ALTER TABLE instruments
    ADD COLUMN original_value_yuan numeric(14, 2) CHECK (original_value_yuan >= 0),
    ADD COLUMN purchase_date       date,
    ADD COLUMN location            text NOT NULL DEFAULT '',
    ADD COLUMN annual_quota_h      double precision
        CHECK (annual_quota_h > 0 AND annual_quota_h <= 8784);
CREATE INDEX instruments_category ON instruments (category);
