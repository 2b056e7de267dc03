//! The configuration file of `proxy run --config FILE`: YAML whose fields are
//! the flags of `proxy run`, named in camelCase (`--min-sync-interval-ms` is
//! `minSyncIntervalMs`). A field left out keeps its default; a flag given on
//! the command line (or through its environment variable) overrides the file.
//!
//! This module knows no field by name. The settings are one struct,
//! `cli::run::RunArgs`, that derives both `clap::Args` and serde's traits
//! (`deny_unknown_fields`, `default`), so a new flag is a new field in one
//! place and the file follows. Here: reading and checking a file (an unknown
//! field or an invalid value is an error that names the file, the field and
//! where it is), layering the flags over it, printing a documented file, and
//! the serde adapters for the field types whose file form is not their Rust
//! form ([`millis`], [`duration`], [`bind_address`]).
//!
//! Must not: read the environment or the command line (the CLI does), or
//! accept a file it did not fully understand.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

/// Errors reading, checking, layering or printing a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, an unknown field, or an invalid value. The source names the
    /// field and the line.
    #[error("invalid configuration file {path}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    /// A `KubeProxyConfiguration` that cannot be read or mapped.
    #[error("invalid kube-proxy configuration file {path}")]
    KubeProxy {
        path: PathBuf,
        #[source]
        source: super::kube_proxy::KubeProxyConfigError,
    },
    /// A value mapped from a `KubeProxyConfiguration` that our setting
    /// refuses (a CIDR that does not parse, an unknown `detectLocalMode`).
    #[error("invalid kube-proxy configuration file {path}: {from} (our {ours})")]
    KubeProxyValue {
        path: PathBuf,
        from: &'static str,
        ours: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot layer the flags over the configuration file")]
    Layer(#[source] serde_json::Error),
    #[error("cannot print the configuration")]
    Print(#[source] serde_norway::Error),
}

/// Reads and checks the file at `path`. An empty file (or one holding only
/// comments) is all defaults.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|source| ConfigFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// What [`load_any`] read.
#[derive(Debug)]
pub struct Loaded<T> {
    pub settings: T,
    /// `Some` when the file was kube-proxy's `KubeProxyConfiguration`: how
    /// it was mapped, and what was not.
    pub kube_proxy: Option<super::kube_proxy::Translation>,
}

/// Reads the file at `path`, in our format or as kube-proxy's
/// `KubeProxyConfiguration` ([`super::kube_proxy`]): its mapped settings
/// over `T`'s defaults.
pub fn load_any<T: DeserializeOwned + Default>(path: &Path) -> Result<Loaded<T>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !super::kube_proxy::is_kube_proxy(&text) {
        let settings = parse(&text).map_err(|source| ConfigFileError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        return Ok(Loaded {
            settings,
            kube_proxy: None,
        });
    }
    let translation =
        super::kube_proxy::translate(&text).map_err(|source| ConfigFileError::KubeProxy {
            path: path.to_owned(),
            source,
        })?;
    // Each setting alone first, so a refused value names its kube-proxy field.
    for mapped in &translation.settings {
        let mut one = serde_json::Map::new();
        one.insert(mapped.ours.to_owned(), mapped.value.clone());
        serde_json::from_value::<T>(serde_json::Value::Object(one)).map_err(|source| {
            ConfigFileError::KubeProxyValue {
                path: path.to_owned(),
                from: mapped.from,
                ours: mapped.ours,
                source,
            }
        })?;
    }
    let settings = serde_json::from_value(serde_json::Value::Object(translation.fields()))
        .map_err(ConfigFileError::Layer)?;
    Ok(Loaded {
        settings,
        kube_proxy: Some(translation),
    })
}

/// [`load`] on text already read.
pub fn parse<T: DeserializeOwned + Default>(text: &str) -> Result<T, serde_norway::Error> {
    // Deserialize from the text, not from a parsed value, so errors keep
    // their line and column.
    match serde_norway::from_str::<serde_norway::Value>(text)? {
        serde_norway::Value::Null => Ok(T::default()),
        _ => serde_norway::from_str(text),
    }
}

/// `over`'s value of each field in `fields` (file field names), `base`'s for
/// every other field: the flags given on the command line over the file. A
/// name that is not a field of `T` (a flag that has no place in the file, such
/// as `--config` itself) is ignored.
pub fn layer<T: Serialize + DeserializeOwned>(
    base: &T,
    over: &T,
    fields: &[String],
) -> Result<T, ConfigFileError> {
    let mut merged = serde_json::to_value(base).map_err(ConfigFileError::Layer)?;
    let over = serde_json::to_value(over).map_err(ConfigFileError::Layer)?;
    if let (Some(merged), Some(over)) = (merged.as_object_mut(), over.as_object()) {
        for field in fields {
            if let Some(value) = over.get(field) {
                merged.insert(field.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(merged).map_err(ConfigFileError::Layer)
}

/// The file field name of a flag's clap id: `min_sync_interval_ms` →
/// `minSyncIntervalMs` (serde's `rename_all = "camelCase"`).
pub fn field_name(flag_id: &str) -> String {
    let mut out = String::with_capacity(flag_id.len());
    let mut upper = false;
    for c in flag_id.chars() {
        match c {
            '_' | '-' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// `value` as a configuration file: `header` as comment lines, then each
/// field, in order, after its `help` as comment lines. Parses back to `value`.
pub fn document<T: Serialize>(
    value: &T,
    header: &str,
    help: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigFileError> {
    let mut out = String::new();
    comment(&mut out, header);
    let serde_norway::Value::Mapping(fields) =
        serde_norway::to_value(value).map_err(ConfigFileError::Print)?
    else {
        // Not a struct: print it as it is.
        out.push_str(&serde_norway::to_string(value).map_err(ConfigFileError::Print)?);
        return Ok(out);
    };
    for (key, field) in fields {
        out.push('\n');
        if let Some(text) = key.as_str().and_then(&help) {
            comment(&mut out, &text);
        }
        let mut one = serde_norway::Mapping::new();
        one.insert(key, field);
        out.push_str(&serde_norway::to_string(&one).map_err(ConfigFileError::Print)?);
    }
    Ok(out)
}

/// Appends `text` as `# ` lines, wrapped near 80 columns.
fn comment(out: &mut String, text: &str) {
    for paragraph in text.lines() {
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() + 1 + word.len() > 80 && line.len() > 1 {
                let _ = writeln!(out, "{line}");
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        let _ = writeln!(out, "{line}");
    }
}

/// A `Duration` as a whole number of milliseconds (`minSyncIntervalMs: 20`),
/// as the `…-ms` flags take it.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A `Duration` written with a unit (`60s`, `2m`, `500ms`), as
/// `crate::config::parse_duration` reads it; a bare number is seconds.
pub mod duration {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// Whole seconds as `60s`, anything finer as `1500ms`.
    pub fn format(d: Duration) -> String {
        match d.as_millis() {
            ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
            ms => format!("{ms}ms"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Visitor)
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 60s, 2m or 500ms")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            crate::config::parse_duration(s).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(n))
        }
    }
}

/// A listen address (`127.0.0.1:10249`, `[::1]:10249`, a bare IP for the
/// default `PORT`, or `""` for off), as the `…-bind-address` flags take it.
pub mod bind_address {
    use serde::{Deserializer, Serializer};

    use super::from_str_with;
    use crate::config::BindAddress;

    pub fn serialize<S: Serializer>(b: &BindAddress, s: S) -> Result<S::Ok, S::Error> {
        match b.addr() {
            Some(addr) => s.collect_str(&addr),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const PORT: u16>(
        d: D,
    ) -> Result<BindAddress, D::Error> {
        from_str_with(d, "IP:port, [IPv6]:port, an IP, or \"\" (off)", |s| {
            BindAddress::parse(s, PORT)
        })
    }
}

/// Reads a string and hands it to `parse` (a flag's value parser), so the
/// file accepts what the flag accepts. A rejection becomes an error of the
/// field, with its place in the file.
pub fn from_str_with<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    E: std::fmt::Display,
{
    d.deserialize_str(StrVisitor { expecting, parse })
}

/// [`from_str_with`] for an optional field: `null` is `None`.
pub fn optional_from_str_with<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    E: std::fmt::Display,
{
    d.deserialize_option(OptionVisitor(StrVisitor { expecting, parse }))
}

struct StrVisitor<F> {
    expecting: &'static str,
    parse: F,
}

impl<T, E: std::fmt::Display, F: FnOnce(&str) -> Result<T, E>> serde::de::Visitor<'_>
    for StrVisitor<F>
{
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<Er: serde::de::Error>(self, s: &str) -> Result<T, Er> {
        (self.parse)(s).map_err(Er::custom)
    }
}

struct OptionVisitor<F>(StrVisitor<F>);

impl<'de, T, E: std::fmt::Display, F: FnOnce(&str) -> Result<T, E>> serde::de::Visitor<'de>
    for OptionVisitor<F>
{
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<Er: serde::de::Error>(self) -> Result<Option<T>, Er> {
        Ok(None)
    }

    fn visit_unit<Er: serde::de::Error>(self) -> Result<Option<T>, Er> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_str(self.0).map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default, rename_all = "camelCase")]
    struct Example {
        name: Option<String>,
        #[serde(with = "millis")]
        interval_ms: Duration,
        #[serde(with = "duration")]
        timeout: Duration,
    }

    impl Default for Example {
        fn default() -> Self {
            Example {
                name: None,
                interval_ms: Duration::from_millis(20),
                timeout: Duration::from_secs(60),
            }
        }
    }

    fn error(text: &str) -> String {
        match parse::<Example>(text) {
            Ok(v) => panic!("expected {text:?} to be rejected, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_fields_keep_their_defaults_and_empty_is_all_defaults() {
        let e: Example = parse("name: web\n").unwrap();
        assert_eq!(
            e,
            Example {
                name: Some("web".into()),
                ..Example::default()
            }
        );
        assert_eq!(parse::<Example>("").unwrap(), Example::default());
        assert_eq!(
            parse::<Example>("# only a comment\n").unwrap(),
            Example::default()
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let e = error("name: web\nintervalMS: 5\n");
        assert!(e.contains("unknown field `intervalMS`"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn an_invalid_value_is_named_with_its_field() {
        let e = error("timeout: 5 parsecs\n");
        assert!(e.contains("timeout"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
        let e = error("intervalMs: soon\n");
        assert!(e.contains("intervalMs"), "{e}");
    }

    #[test]
    fn durations_take_units_or_seconds() {
        let e: Example = parse("timeout: 2m\n").unwrap();
        assert_eq!(e.timeout, Duration::from_secs(120));
        let e: Example = parse("timeout: 90\n").unwrap();
        assert_eq!(e.timeout, Duration::from_secs(90));
        for ms in [0, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 7_200_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(crate::config::parse_duration(&duration::format(d)), Ok(d));
        }
    }

    #[test]
    fn layering_takes_only_the_named_fields_from_above() {
        let file = Example {
            name: Some("file".into()),
            timeout: Duration::from_secs(5),
            ..Example::default()
        };
        let flags = Example {
            name: Some("flag".into()),
            ..Example::default()
        };
        let merged = layer(&file, &flags, &["name".into(), "config".into()]).unwrap();
        assert_eq!(
            merged,
            Example {
                name: Some("flag".into()),
                timeout: Duration::from_secs(5),
                ..Example::default()
            }
        );
    }

    #[test]
    fn the_documented_file_parses_back() {
        let value = Example {
            name: Some("a: tricky # value".into()),
            ..Example::default()
        };
        let text = document(&value, "A header.", |field| {
            (field == "timeout").then(|| "How long to wait.".to_owned())
        })
        .unwrap();
        assert!(text.starts_with("# A header.\n"), "{text}");
        assert!(
            text.contains("# How long to wait.\ntimeout: 60s\n"),
            "{text}"
        );
        assert_eq!(parse::<Example>(&text).unwrap(), value);
    }

    #[test]
    fn flag_ids_become_camel_case_fields() {
        assert_eq!(field_name("min_sync_interval_ms"), "minSyncIntervalMs");
        assert_eq!(field_name("cgroup"), "cgroup");
    }
}
