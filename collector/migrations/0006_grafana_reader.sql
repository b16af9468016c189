-- A read-only login role for Grafana's datasource: dashboards can read every
-- table but change none, whoever edits a panel's SQL.
--
-- Roles are cluster-wide, so the role is created only if it is missing, and
-- only by a migrator allowed to create roles (docker compose migrates as the
-- database's superuser). Elsewhere an administrator creates it first:
--   CREATE ROLE instrumetry_grafana LOGIN;
-- The password is never committed: the deployment sets it (docker compose's
-- grafana-role step: ALTER ROLE instrumetry_grafana PASSWORD ...).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'instrumetry_grafana') THEN
        IF NOT EXISTS (SELECT FROM pg_roles
                       WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RAISE WARNING 'role instrumetry_grafana is missing and % may not create it: '
                'Grafana gets no read access until an administrator runs '
                '"CREATE ROLE instrumetry_grafana LOGIN" and the grants of '
                'collector/migrations/0006_grafana_reader.sql', current_user;
            RETURN;
        END IF;
        CREATE ROLE instrumetry_grafana LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
        ALTER ROLE instrumetry_grafana SET default_transaction_read_only = on;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO instrumetry_grafana', current_database());
    GRANT USAGE ON SCHEMA public TO instrumetry_grafana;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO instrumetry_grafana;
    -- Tables later migrations create (by the same migrating role) are readable too.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO instrumetry_grafana;
END
$$;
