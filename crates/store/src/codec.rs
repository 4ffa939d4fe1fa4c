//! How record fields become column values, the same for every dialect: times as
//! microseconds since the Unix epoch (UTC), maps and restrictions as JSON text.

use crate::{Result, StoreError};
use serde::{de::DeserializeOwned, Serialize};
use time::OffsetDateTime;

/// Microseconds since the Unix epoch. Sub-microsecond digits are dropped (rounding down),
/// which is why `keyplane_core::now()` truncates to microseconds.
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    let m = t.unix_timestamp_nanos().div_euclid(1000);
    // OffsetDateTime spans about ±10_000 years: ±3.2e17 µs, well inside i64.
    i64::try_from(m).unwrap_or(if m < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn micros_opt(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(micros)
}

pub(crate) fn from_micros(column: &str, m: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1000)
        .map_err(|_| StoreError::Internal(format!("column {column}: time out of range")))
}

pub(crate) fn to_json<T: Serialize>(column: &str, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("column {column}: cannot encode JSON: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(format!("column {column}: stored JSON unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn micros_round_trip() {
        for t in [
            datetime!(1970-01-01 0:00 UTC),
            datetime!(2025-03-04 05:06:07.123456 UTC),
            datetime!(1969-12-31 23:59:59.999999 UTC),
        ] {
            assert_eq!(from_micros("t", micros(t)).unwrap(), t);
        }
    }

    #[test]
    fn micros_drop_nanoseconds_rounding_down() {
        let t = datetime!(2025-03-04 05:06:07.123456789 UTC);
        assert_eq!(micros(t), micros(datetime!(2025-03-04 05:06:07.123456 UTC)));
        let before_epoch = datetime!(1969-12-31 23:59:59.9999995 UTC);
        assert_eq!(micros(before_epoch), -1);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = datetime!(2025-03-04 07:06:07 +2);
        let back = from_micros("t", micros(t)).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.offset(), time::UtcOffset::UTC);
    }
}
