-- Keyplane schema, version 5 (SQLite): ephemeral tokens (`auth_tokens/{id}`).
--
-- `token_hash` is HMAC-SHA256(server secret, token name); the name itself is never stored.
-- `key_hash` is the lookup hash of the API key that minted the token. Each use is one
-- conditional `update ... set uses_left = uses_left - 1 where uses_left > 0 and ...`.
-- `setup` is the `bidiGenerateContentSetup` JSON, `field_mask` the comma string as sent.
create table ephemeral_tokens (
    token_hash              blob    primary key not null,
    key_hash                blob    not null,
    project_number          integer not null,
    uses_left               integer not null,
    expire_time             integer not null,
    new_session_expire_time integer not null,
    setup                   text,
    field_mask              text,
    create_time             integer not null
) strict;
create index ephemeral_tokens_expire on ephemeral_tokens (expire_time);
