-- Keyplane schema, version 4 (SQLite): what users and the audit log need beyond version 1.
--
-- `users` (version 1): one row per `user:{email}` (email lowercased), `password_hash` an
-- Argon2id PHC string, never a password; now with a display name and an update time.
-- `audit_log` (version 1): one row per mutating control-plane request, in arrival order
-- (`id`); `resource` is the request path without its query string (never a key string).
-- Now with `project`, the project the path names as written (id or number; NULL when
-- none), and the HTTP `status` of the answer.
alter table users add column display_name text not null default '';
alter table users add column update_time integer not null default 0;
alter table audit_log add column project text;
alter table audit_log add column status integer not null default 0;
create index audit_log_project on audit_log (project, id);
