//! The eBPF map sizes an operator may set (`--service-map-entries`,
//! `--backend-map-entries`), and their bounds.
//!
//! A hash map's size is the kernel's `max_entries`: at least 1, and at most
//! [`MAX`], since the kernel refuses a map whose bucket array (the size
//! rounded up to a power of two, 16 bytes a bucket) would pass 4 GiB.

/// The largest size the kernel accepts for a hash map: 2^27 buckets of 16
/// bytes is the last power of two below `u32::MAX` bytes (`htab_map_alloc`).
pub const MAX: u32 = 1 << 27;

/// A map size that is not a number in `1..=MAX`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapEntriesError {
    #[error("{0:?} is not a number of map entries")]
    NotANumber(String),
    #[error(
        "{0} map entries is out of range: 1 to {MAX} (2^27, the kernel's limit for a hash map)"
    )]
    OutOfRange(u64),
}

/// Parses a map size (`--service-map-entries 4194304`), `1..=MAX`.
pub fn parse(s: &str) -> Result<u32, MapEntriesError> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| MapEntriesError::NotANumber(s.to_owned()))?;
    check(n)
}

/// Checks a size read as a number (the configuration file's fields).
pub fn check(n: u64) -> Result<u32, MapEntriesError> {
    match u32::try_from(n) {
        Ok(v) if (1..=MAX).contains(&v) => Ok(v),
        _ => Err(MapEntriesError::OutOfRange(n)),
    }
}

/// A configuration file's map size (`serviceMapEntries: 4194304`): a number
/// or a string of one, `1..=MAX`, or `null` for the default. A value out of
/// range is an error of the field, with its place in the file.
pub fn deserialize_optional<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    d.deserialize_option(Optional)
}

struct Optional;

impl<'de> serde::de::Visitor<'de> for Optional {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of map entries, 1 to 134217728")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Entries).map(Some)
    }
}

struct Entries;

impl serde::de::Visitor<'_> for Entries {
    type Value = u32;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of map entries, 1 to 134217728")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u32, E> {
        check(n).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u32, E> {
        let n =
            u64::try_from(n).map_err(|_| E::custom(MapEntriesError::NotANumber(n.to_string())))?;
        check(n).map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u32, E> {
        parse(s).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_one_to_the_kernel_limit_are_accepted() {
        assert_eq!(parse("1"), Ok(1));
        assert_eq!(parse("4194304"), Ok(4_194_304));
        assert_eq!(parse("134217728"), Ok(MAX));
    }

    #[test]
    fn zero_too_large_and_non_numbers_are_refused_with_the_range() {
        assert_eq!(parse("0"), Err(MapEntriesError::OutOfRange(0)));
        assert_eq!(
            parse("134217729"),
            Err(MapEntriesError::OutOfRange(134_217_729))
        );
        assert_eq!(
            parse("99999999999"),
            Err(MapEntriesError::OutOfRange(99_999_999_999))
        );
        assert!(matches!(parse("-1"), Err(MapEntriesError::NotANumber(_))));
        assert!(matches!(parse("4M"), Err(MapEntriesError::NotANumber(_))));
        let text = MapEntriesError::OutOfRange(0).to_string();
        assert!(text.contains("1 to 134217728"), "{text}");
    }
}
