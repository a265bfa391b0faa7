-- What the gateway's own role (here escr_app) is granted on the shared state store,
-- after `escr migrate-state` has run as the database's owner. The audit and the
-- consent history get SELECT and INSERT only: no UPDATE, DELETE or TRUNCATE (their
-- triggers refuse those even to the owner). consent's UPDATE records a withdrawal;
-- index_snapshot's DELETE drops superseded index versions.
GRANT SELECT ON schema_version TO escr_app;
GRANT SELECT, INSERT, UPDATE ON consent TO escr_app;
GRANT SELECT, INSERT ON consent_history, audit, audit_chain, audit_subject TO escr_app;
GRANT SELECT, INSERT, DELETE ON index_snapshot TO escr_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO escr_app;
