-- Keyplane schema, version 1 (SQLite).
--
-- Conventions (see ../README.md): times are INTEGER microseconds since the Unix epoch
-- (UTC); booleans are INTEGER 0/1; hashes and ciphertexts are BLOB; labels, annotations,
-- restrictions, policies are JSON text. Tables are STRICT so a wrongly typed bind fails
-- loudly instead of being stored as something else.

-- Free-form installation metadata (`bootstrap.version`, ...).
create table meta (
    key   text primary key not null,
    value text not null
) strict;

-- `organizations/{number}`: one per installation by default.
create table organizations (
    number       integer primary key not null,
    display_name text    not null,
    create_time  integer not null
) strict;

-- `projects/{number}`, also known by its projectId. Never deleted outright: a deleted
-- project is DELETE_REQUESTED and keeps its id and number.
create table projects (
    number         integer primary key not null,
    project_id     text    not null unique,
    display_name   text    not null,
    parent         text    not null,
    state          text    not null check (state in ('ACTIVE', 'DELETE_REQUESTED')),
    labels         text    not null default '{}',
    tier           text    not null,
    studio_visible integer not null check (studio_visible in (0, 1)),
    created_by     text    not null,
    create_time    integer not null,
    update_time    integer not null,
    delete_time    integer,
    etag           text    not null
) strict;
-- list_projects walks `project_id` in order: the unique index above serves it.

-- `projects/{n}/services/{service}`: present once a service was enabled or disabled.
create table services (
    project_number integer not null references projects (number),
    service        text    not null,
    enabled        integer not null check (enabled in (0, 1)),
    update_time    integer not null,
    primary key (project_number, service)
) strict;

create table service_accounts (
    email          text    primary key not null,
    unique_id      text    not null unique,
    project_number integer not null references projects (number),
    project_id     text    not null,
    display_name   text    not null,
    description    text    not null,
    disabled       integer not null check (disabled in (0, 1)),
    create_time    integer not null,
    etag           text    not null
) strict;
create index service_accounts_project on service_accounts (project_number, email);

-- Public halves only.
create table service_account_keys (
    key_id                text    primary key not null,
    service_account_email text    not null
        references service_accounts (email) on delete cascade,
    public_key_pem        text    not null,
    disabled              integer not null check (disabled in (0, 1)),
    valid_after           integer not null,
    valid_before          integer not null,
    create_time           integer not null
) strict;
create index service_account_keys_email
    on service_account_keys (service_account_email, create_time, key_id);

-- `projects/{number}/locations/global/keys/{keyId}`. The key string itself is never
-- here: `lookup_hash` is its HMAC, `ciphertext` its AES-GCM encryption.
-- Soft-deleted keys keep their row (delete_time set) until purged.
create table api_keys (
    project_number        integer not null references projects (number),
    key_id                text    not null,
    uid                   text    not null unique,
    display_name          text    not null,
    lookup_hash           blob    not null unique,
    ciphertext            blob    not null,
    last4                 text    not null,
    restrictions          text    not null default '{}',
    annotations           text    not null default '{}',
    service_account_email text,
    create_time           integer not null,
    update_time           integer not null,
    delete_time           integer,
    etag                  text    not null,
    primary key (project_number, key_id)
) strict;
-- list_keys: a project's keys by create time then key id.
create index api_keys_project_order on api_keys (project_number, create_time, key_id);
-- purge_deleted_keys and all_live_keys.
create index api_keys_delete_time on api_keys (delete_time);

-- OAuth access tokens minted at /token, kept only as an HMAC.
create table access_tokens (
    token_hash  blob    primary key not null,
    principal   text    not null,
    scope       text    not null,
    expire_time integer not null
) strict;
create index access_tokens_expire_time on access_tokens (expire_time);

-- Finished long-running operations (`google.longrunning.Operation` JSON).
create table operations (
    name        text    primary key not null,
    body        text    not null,
    create_time integer not null
) strict;

-- The tables below have no Store methods yet; they are here so the next schema version
-- does not have to rewrite the first.

-- Studio users (`user:{email}`); Argon2id PHC strings.
create table users (
    email         text    primary key not null,
    password_hash text    not null,
    disabled      integer not null default false check (disabled in (0, 1)),
    create_time   integer not null
) strict;

-- IAM policies on `organizations/{n}` and `projects/{n}`.
create table iam_policies (
    resource text primary key not null,
    policy   text not null,
    etag     text not null
) strict;

-- Organization policies; `constraint_name` because `constraint` is an SQL keyword.
create table org_policies (
    resource        text    not null,
    constraint_name text    not null,
    spec            text    not null,
    etag            text    not null,
    update_time     integer not null,
    primary key (resource, constraint_name)
) strict;

create table audit_log (
    id        integer primary key not null,
    time      integer not null,
    principal text    not null,
    method    text    not null,
    resource  text    not null,
    result    text    not null,
    detail    text    not null default '{}'
) strict;
create index audit_log_time on audit_log (time);
create index audit_log_resource on audit_log (resource, time);
