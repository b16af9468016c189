-- The region an institution belongs to (a district, a province: whatever unit
-- the platform's reviewers compare), so capacity can be reported per category
-- and region. Nullable: a registry that records no regions reports every
-- institution under one null region, as before.
ALTER TABLE institutions
    ADD COLUMN region text CHECK (region IS NULL OR length(region) BETWEEN 1 AND 200);
