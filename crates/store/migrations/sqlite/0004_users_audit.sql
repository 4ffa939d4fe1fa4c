-- Keyplane schema, version 4 (SQLite): people who sign in, and the audit log.
--
-- `users`: one row per `user:{email}` (email lowercased); `password_hash` is an Argon2id
-- PHC string, never a password.
-- `audit_log`: one row per mutating control-plane request, in arrival order (`id`).
-- `resource` is the request path without its query string (never a key string);
-- `project` is the project the path names, as written (id or number), NULL when none.
create table users (
    email         text    primary key not null,
    display_name  text    not null,
    password_hash text    not null,
    disabled      integer not null check (disabled in (0, 1)),
    create_time   integer not null,
    update_time   integer not null
) strict;

create table audit_log (
    id        integer primary key autoincrement,
    time      integer not null,
    principal text    not null,
    method    text    not null,
    resource  text    not null,
    project   text,
    result    text    not null,
    status    integer not null
) strict;
create index audit_log_time on audit_log (time);
create index audit_log_project on audit_log (project, id);
