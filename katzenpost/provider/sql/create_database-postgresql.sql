-- Katzenpost provider database for PostgreSQL >= 9.5: the user database and/or the spool.
--
-- The same tables, functions and schema_version (0) as the reference provider's
-- create_database-postgresql.sql, so a database created for the Go provider works with this one
-- and the other way round. Every server access goes through the functions below, so the
-- server's role may be limited to EXECUTE on them.
--
-- Load it with `katzenpost-provider-sql init [--spool-only] DSN`, which sets
-- katzenpost.spool_only first. A spool-only database has no keys: it cannot serve as the user
-- database, and storing to an unknown user creates the user's row.

BEGIN;

DO $create$
DECLARE
  spool_only boolean := coalesce(nullif(current_setting('katzenpost.spool_only', true), ''), 'false')::boolean;
BEGIN
  IF current_setting('server_version_num')::integer < 90500 THEN
    RAISE 'katzenpost needs PostgreSQL 9.5 or newer (INSERT ... ON CONFLICT)';
  END IF;

  CREATE TABLE metadata (
    schema_version smallint NOT NULL,
    spool_only     boolean  NOT NULL
  );
  INSERT INTO metadata (schema_version, spool_only) VALUES (0, spool_only);

  CREATE TABLE users (
    user_id   bigserial PRIMARY KEY,
    user_name bytea NOT NULL UNIQUE
  );
  IF NOT spool_only THEN
    ALTER TABLE users ADD COLUMN authentication_key bytea NOT NULL;
    ALTER TABLE users ADD COLUMN identity_key bytea;
  END IF;

  CREATE TABLE spool (
    message_id   bigserial PRIMARY KEY,
    user_id      bigint REFERENCES users ON DELETE CASCADE,
    surb_id      bytea,
    message_body bytea NOT NULL
  );
  CREATE INDEX ON spool (user_id);
  -- Not in the reference (harmless there): spool_get reads a user's head through it.
  CREATE INDEX ON spool (user_id, message_id);

  CREATE FUNCTION metadata_get() RETURNS record LANGUAGE plpgsql STABLE AS $fn$
  DECLARE
    result record;
  BEGIN
    SELECT * INTO STRICT result FROM metadata;
    RETURN result;
  END $fn$;

  IF NOT spool_only THEN
    -- A missing user raises no_data_found (P0002) through SELECT ... INTO STRICT.
    CREATE FUNCTION user_get_authentication_key(user_name bytea) RETURNS bytea
    LANGUAGE plpgsql STABLE AS $fn$
    DECLARE
      result bytea;
    BEGIN
      SELECT u.authentication_key INTO STRICT result FROM users u WHERE u.user_name = $1;
      RETURN result;
    END $fn$;

    CREATE FUNCTION user_set_authentication_key(user_name bytea, authentication_key bytea,
                                                is_update boolean) RETURNS void
    LANGUAGE plpgsql AS $fn$
    BEGIN
      IF $3 THEN
        UPDATE users u SET authentication_key = $2 WHERE u.user_name = $1;
        IF NOT FOUND THEN
          RAISE SQLSTATE 'P0002';
        END IF;
      ELSE
        INSERT INTO users (user_id, user_name, authentication_key) VALUES (DEFAULT, $1, $2);
      END IF;
    END $fn$;

    CREATE FUNCTION user_get_identity_key(user_name bytea) RETURNS bytea
    LANGUAGE plpgsql STABLE AS $fn$
    DECLARE
      result bytea;
    BEGIN
      SELECT u.identity_key INTO STRICT result FROM users u WHERE u.user_name = $1;
      RETURN result;
    END $fn$;

    CREATE FUNCTION user_set_identity_key(user_name bytea, identity_key bytea) RETURNS void
    LANGUAGE plpgsql AS $fn$
    BEGIN
      UPDATE users u SET identity_key = $2 WHERE u.user_name = $1;
      IF NOT FOUND THEN
        RAISE SQLSTATE 'P0002';
      END IF;
    END $fn$;
  END IF;

  -- Deleting the user row deletes its spool (ON DELETE CASCADE); a missing user is an error.
  CREATE FUNCTION user_delete(user_name bytea) RETURNS void LANGUAGE plpgsql AS $fn$
  DECLARE
    deleted integer;
  BEGIN
    DELETE FROM users u WHERE u.user_name = $1 RETURNING 1 INTO STRICT deleted;
  END $fn$;

  -- The head of the spool (after deleting the old head when advance is true) and whether at
  -- least one more entry follows it (remaining is 0 or 1), as the reference's spool_get. Each
  -- step reads at most one row through the (user_id, message_id) index, so the cost does not
  -- grow with the length of the spool.
  CREATE FUNCTION spool_get(user_name bytea, advance boolean) RETURNS record
  LANGUAGE plpgsql AS $fn$
  DECLARE
    owner  bigint;
    head   record;
    result record;
  BEGIN
    result := (NULL::bytea, NULL::bytea, 0);
    SELECT u.user_id INTO owner FROM users u WHERE u.user_name = $1;
    IF owner IS NULL THEN
      RETURN result;
    END IF;
    IF $2 THEN
      DELETE FROM spool WHERE message_id = (
        SELECT s.message_id FROM spool s WHERE s.user_id = owner
        ORDER BY s.message_id LIMIT 1 FOR UPDATE);
    END IF;
    SELECT s.message_id, s.message_body, s.surb_id INTO head FROM spool s
    WHERE s.user_id = owner ORDER BY s.message_id LIMIT 1;
    IF NOT FOUND THEN
      RETURN result;
    END IF;
    result := (head.message_body, head.surb_id,
               CASE WHEN EXISTS (SELECT 1 FROM spool s WHERE s.user_id = owner
                                 AND s.message_id > head.message_id) THEN 1 ELSE 0 END);
    RETURN result;
  END $fn$;

  IF NOT spool_only THEN
    CREATE FUNCTION spool_store(user_name bytea, surb_id bytea, msg bytea) RETURNS void
    LANGUAGE plpgsql AS $fn$
    BEGIN
      INSERT INTO spool (message_id, user_id, surb_id, message_body)
      VALUES (DEFAULT, (SELECT u.user_id FROM users u WHERE u.user_name = $1), $2, $3);
    END $fn$;
  ELSE
    CREATE FUNCTION spool_store(user_name bytea, surb_id bytea, msg bytea) RETURNS void
    LANGUAGE plpgsql AS $fn$
    BEGIN
      INSERT INTO users (user_id, user_name) VALUES (DEFAULT, $1) ON CONFLICT DO NOTHING;
      INSERT INTO spool (message_id, user_id, surb_id, message_body)
      VALUES (DEFAULT, (SELECT u.user_id FROM users u WHERE u.user_name = $1), $2, $3);
    END $fn$;
  END IF;
END
$create$;

COMMIT;
