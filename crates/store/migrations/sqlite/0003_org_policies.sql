-- Keyplane schema, version 3 (SQLite): organization policies keep their dry-run spec.
--
-- `org_policies` (version 1) holds one row per (resource, constraint): `spec` is the
-- Org Policy v2 `PolicySpec` JSON the server wrote (`null` when the policy has only a
-- dry-run spec), `dry_run_spec` the audit-only spec, NULL when there is none.
alter table org_policies add column dry_run_spec text;
