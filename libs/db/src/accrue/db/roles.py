"""The database role services act as, and what it may do: everything in its schema but change
or remove audit records.

Migrations run as the owner of the schema (whoever ACCRUE_DATABASE_URL logs in as); a running
service acts as `APP_ROLE` (`create_engine(..., role=APP_ROLE)` sets PostgreSQL's `role` when
each connection starts). The owner grants the role what the service needs on every table of the
schema, present and future, and on the audit table only SELECT and INSERT
(`accrue.db.audit.append_only_grants_sql`). So a service, or whoever takes over its connection,
cannot UPDATE, DELETE or TRUNCATE audit records: the grant refuses it before the append-only
trigger is even reached, and as a non-owner it cannot disable the trigger either.

What this does not stop: a session may `RESET ROLE` back to the login user. Where that matters
(production), let the services log in as a role that is a member of `APP_ROLE` and owns nothing,
and run the migrations with the owner's URL; see docs/security.md. Either way the hash chain
shows any change made by someone who could step around the grants.

The role is cluster-wide and shared by every service schema (each grants it only its own
tables). The embedded PostgreSQL and the local Kubernetes overlay run migrations as a superuser,
which creates it; elsewhere the owner needs CREATEROLE once, or a DBA creates it beforehand.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from accrue.db.audit import TABLE_NAME, Executor, append_only_grants_sql

APP_ROLE = "accrue_app"


def _create_role_sql(role: str) -> str:
    # Every service migrates at start, at the same time: CREATE ROLE races on the cluster-wide
    # catalog, so the loser's duplicate is not an error. Granting the role to the migrating user
    # lets it (and a service logged in as it) act as the role when it is not a superuser.
    return f"""DO $$
    BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
          CREATE ROLE "{role}" NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
      END IF;
      IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', '{role}', current_user);
      END IF;
    END $$"""


def app_role_grants_sql(schema: str, role: str = APP_ROLE, audit_table: str = TABLE_NAME) -> list[str]:
    """The statements (run by the schema's owner) that let `role` run the service and only
    read and append its audit records."""
    s = f'"{schema}"'
    r = f'"{role}"'
    return [
        _create_role_sql(role),
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        # Tables later migrations create (as this same owner) are the service's too.
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
        # Last: the audit table got the full set above along with every other table.
        *append_only_grants_sql(schema, role, audit_table),
    ]


def grant_app_role(executor: Executor, schema: str, role: str = APP_ROLE) -> None:
    """In a migration, after the audit table exists: `grant_app_role(op, "billing")`."""
    _run(executor, app_role_grants_sql(schema, role))


def revoke_app_role_sql(schema: str, role: str = APP_ROLE) -> list[str]:
    """Undo `app_role_grants_sql` for one schema (a downgrade); the role itself stays."""
    s = f'"{schema}"'
    r = f'"{role}"'
    return [
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE ALL ON TABLES FROM {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE ALL ON SEQUENCES FROM {r}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
        f"REVOKE USAGE ON SCHEMA {s} FROM {r}",
    ]


def _run(executor: Executor, statements: Iterable[str]) -> None:
    for statement in statements:
        executor.execute(sa.text(statement))
