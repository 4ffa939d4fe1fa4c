-- Keyplane schema, version 6 (SQLite): usage buckets, what the data plane metered.
--
-- One row per (project, key uid, model, method, UTC minute, HTTP status); `key_id` is ''
-- for a caller without a key, `minute` counts minutes since the Unix epoch. Rows are only
-- ever added to (`insert ... on conflict (...) do update set requests = requests +
-- excluded.requests, ...`) and purged by age.
--
-- The primary key leads with (project_number, minute) and follows the order a project's
-- rows are read in (minute, model, method, key_id, code): reading a project over a range
-- of minutes walks it without a sort. `usage_buckets_minute` serves what reads by minute
-- alone: the day totals seeded at start and the purge of old rows.
create table usage_buckets (
    project_number    integer not null,
    key_id            text    not null,
    model             text    not null,
    method            text    not null,
    minute            integer not null,
    code              integer not null,
    requests          integer not null,
    prompt_tokens     integer not null,
    candidates_tokens integer not null,
    latency_ms        integer not null,
    primary key (project_number, minute, model, method, key_id, code)
) strict;
create index usage_buckets_minute on usage_buckets (minute);
