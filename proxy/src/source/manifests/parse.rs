//! Parsing one manifest file into domain Services and EndpointSlices.
//!
//! Owns the file format: multi-document YAML (`---`), empty documents, `kind:
//! List` (`v1`) with `items`, `v1` Services and `discovery.k8s.io/v1`
//! EndpointSlices exactly as `kubectl get -o yaml` prints them (server-set fields
//! included and ignored).
//!
//! Two levels of failure:
//! - the file is not YAML (syntax error, a truncated quoted string …):
//!   [`parse_file`] returns `Err`, and the caller keeps the file's last good
//!   contents;
//! - one object is wrong (unknown kind, invalid clusterIP …): that object is left
//!   out and a [`ManifestError`] goes into [`ParsedFile::problems`]; the rest of
//!   the file is used. Dropped pieces of an object (an SCTP port) and slices
//!   without their service-name label are problems too, see
//!   [`ManifestError::is_warning`].
//!
//! Pure: reads only the text it is given; `path` is only used in messages.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use serde::de::DeserializeSeed as _;
use serde_json::Value;

use super::limits::{self, Budget, Counter, Exceeded, Limits};

use crate::model::{
    EndpointSlice, Service,
    convert::{self, ConvertError, ConvertWarning, Converted, Skip},
};

/// What one file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFile {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    /// Objects left out on purpose that need nobody's attention: ExternalName
    /// and headless Services, FQDN slices. Skips that probably are mistakes go
    /// into `problems` instead.
    pub skipped: Vec<Skip>,
    /// Objects (or parts of them) left out, in file order.
    pub problems: Vec<ManifestError>,
}

/// Where in a file an object is, for objects that have no usable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based, counting empty documents.
    pub document: usize,
    /// 1-based index in a `kind: List`'s `items`.
    pub item: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// A problem with a manifest file. Displays as `<file>: <object>: <reason>`,
/// where the object is `Service ns/name`, `EndpointSlice ns/name` or
/// `document N [item M]`.
///
/// Messages of the YAML and decoding libraries are kept as text: callers match
/// on the variant, not on those libraries' error types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The whole file: nothing in it can be trusted.
    #[error("{file}: not valid YAML: {reason}", file = .file.display())]
    Yaml { file: PathBuf, reason: String },
    #[error("{file}: {at}: not a mapping", file = .file.display())]
    NotAMapping { file: PathBuf, at: Position },
    #[error("{file}: {at}: has no kind", file = .file.display())]
    NoKind { file: PathBuf, at: Position },
    #[error("{file}: {at}: unknown kind {kind} (apiVersion {api_version})", file = .file.display())]
    UnknownKind {
        file: PathBuf,
        at: Position,
        kind: String,
        api_version: String,
    },
    #[error("{file}: {at}: {reason}", file = .file.display())]
    BadList {
        file: PathBuf,
        at: Position,
        reason: &'static str,
    },
    /// The file is over one of the parse limits ([`Limits`]): nothing in it
    /// is used.
    #[error("{file}: rejected: {exceeded}", file = .file.display())]
    Limit { file: PathBuf, exceeded: Exceeded },
    /// The file is not UTF-8 text: nothing in it is used.
    #[error("{file}: not UTF-8 text: {reason}", file = .file.display())]
    NotUtf8 { file: PathBuf, reason: String },
    /// The file is a symbolic link that leads out of the directory (or
    /// nowhere): it is never read, so a link to `/etc/shadow` cannot be read
    /// as root and echoed in an error.
    #[error(
        "{file}: a symbolic link out of the manifest directory ({target}): not read",
        file = .file.display()
    )]
    OutsideLink { file: PathBuf, target: String },
    /// The object does not match its kind's schema (e.g. `port: abc`).
    #[error("{file}: {object}: cannot decode: {reason}", file = .file.display())]
    Decode {
        file: PathBuf,
        object: String,
        reason: String,
    },
    /// The object is invalid (e.g. an invalid clusterIP).
    #[error("{file}: {error}", file = .file.display())]
    Convert {
        file: PathBuf,
        error: Box<ConvertError>,
    },
    /// Part of an object was dropped; the rest is used.
    #[error("{file}: {warning}", file = .file.display())]
    Warning {
        file: PathBuf,
        warning: Box<ConvertWarning>,
    },
    /// An object skipped that was probably meant to be used.
    #[error("{file}: {skip}", file = .file.display())]
    Skipped { file: PathBuf, skip: Box<Skip> },
}

impl ManifestError {
    /// The file the problem is in.
    pub fn file(&self) -> &Path {
        match self {
            ManifestError::Yaml { file, .. }
            | ManifestError::Limit { file, .. }
            | ManifestError::NotUtf8 { file, .. }
            | ManifestError::OutsideLink { file, .. }
            | ManifestError::NotAMapping { file, .. }
            | ManifestError::NoKind { file, .. }
            | ManifestError::UnknownKind { file, .. }
            | ManifestError::BadList { file, .. }
            | ManifestError::Decode { file, .. }
            | ManifestError::Convert { file, .. }
            | ManifestError::Warning { file, .. }
            | ManifestError::Skipped { file, .. } => file,
        }
    }

    /// The `reason` label of `proxy_config_rejects_total` (snake_case, a
    /// closed set: a new variant needs one).
    pub fn label(&self) -> &'static str {
        match self {
            ManifestError::Yaml { .. } => "invalid_yaml",
            ManifestError::Limit { exceeded, .. } => exceeded.label(),
            ManifestError::NotUtf8 { .. } => "not_utf8",
            ManifestError::OutsideLink { .. } => "symlink_outside",
            ManifestError::NotAMapping { .. } => "not_a_mapping",
            ManifestError::NoKind { .. } => "no_kind",
            ManifestError::UnknownKind { .. } => "unknown_kind",
            ManifestError::BadList { .. } => "bad_list",
            ManifestError::Decode { .. } => "decode",
            ManifestError::Convert { error, .. } => error.label(),
            ManifestError::Warning { warning, .. } => warning.label(),
            ManifestError::Skipped { skip, .. } => skip.reason.label(),
        }
    }

    /// True when the object itself (or the rest of it) is still used or is
    /// deliberately ignored; false when something the author wrote was rejected.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            ManifestError::Warning { .. } | ManifestError::Skipped { .. }
        )
    }
}

/// Parses one manifest file under the default [`Limits`]. `Err` only when
/// the file as a whole is unusable; see the module docs.
pub fn parse_file(path: &Path, text: &str) -> Result<ParsedFile, ManifestError> {
    parse_file_with(path, text, &Limits::default())
}

/// Parses one manifest file under `limits` (its size is the caller's to
/// check, before reading it).
pub fn parse_file_with(
    path: &Path,
    text: &str,
    limits: &Limits,
) -> Result<ParsedFile, ManifestError> {
    let over = |exceeded| ManifestError::Limit {
        file: path.to_owned(),
        exceeded,
    };
    if text.len() as u64 > limits.max_bytes {
        return Err(over(Exceeded::Size {
            limit: limits.max_bytes,
        }));
    }
    limits::check_flow_depth(text, limits.max_depth).map_err(over)?;
    // Read every document before converting any, so a syntax error anywhere
    // rejects the whole file rather than yielding its first half. One
    // counter for the whole file: the node limit is per file.
    let counter = Counter::new(*limits);
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value =
            Budget::root(&counter)
                .deserialize(document)
                .map_err(|e| match counter.exceeded() {
                    Some(exceeded) => over(exceeded),
                    None => ManifestError::Yaml {
                        file: path.to_owned(),
                        reason: e.to_string(),
                    },
                })?;
        documents.push(value);
    }

    let mut parser = Parser {
        file: path,
        out: ParsedFile::default(),
    };
    for (i, document) in documents.into_iter().enumerate() {
        let at = Position {
            document: i + 1,
            item: None,
        };
        if document.is_null() {
            continue;
        }
        // YAML allows what JSON does not (non-string keys, tags); such a document
        // is not a Kubernetes object.
        match serde_json::to_value(document) {
            Ok(value) => parser.document(value, at),
            Err(e) => parser.problem(ManifestError::Decode {
                file: path.to_owned(),
                object: at.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    Ok(parser.out)
}

struct Parser<'a> {
    file: &'a Path,
    out: ParsedFile,
}

impl Parser<'_> {
    fn problem(&mut self, problem: ManifestError) {
        self.out.problems.push(problem);
    }

    fn document(&mut self, value: Value, at: Position) {
        let Value::Object(map) = &value else {
            self.problem(ManifestError::NotAMapping {
                file: self.file.to_owned(),
                at,
            });
            return;
        };
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let Some(kind) = map.get("kind").and_then(Value::as_str) else {
            self.problem(ManifestError::NoKind {
                file: self.file.to_owned(),
                at,
            });
            return;
        };
        match (api_version, kind) {
            ("v1", "List") if at.item.is_none() => self.list(value, at),
            ("v1", "List") => self.problem(ManifestError::BadList {
                file: self.file.to_owned(),
                at,
                reason: "a List inside a List is not supported",
            }),
            ("v1", "Service") => {
                let object = describe(&value, "Service", at);
                match serde_json::from_value::<core::Service>(prune(value)) {
                    Ok(svc) => {
                        let converted = convert::service(&svc);
                        self.converted(converted, |out, s| out.services.push(s));
                    }
                    Err(e) => self.decode_failed(object, &e),
                }
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let object = describe(&value, "EndpointSlice", at);
                match serde_json::from_value::<discovery::EndpointSlice>(prune(value)) {
                    Ok(slice) => {
                        let converted = convert::endpoint_slice(&slice);
                        self.converted(converted, |out, s| out.slices.push(s));
                    }
                    Err(e) => self.decode_failed(object, &e),
                }
            }
            (api_version, kind) => {
                let problem = ManifestError::UnknownKind {
                    file: self.file.to_owned(),
                    at,
                    kind: kind.to_owned(),
                    api_version: api_version.to_owned(),
                };
                self.problem(problem);
            }
        }
    }

    fn list(&mut self, value: Value, at: Position) {
        let items = match value {
            Value::Object(mut map) => map.remove("items"),
            _ => None,
        };
        match items {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.document(
                        item,
                        Position {
                            item: Some(i + 1),
                            ..at
                        },
                    );
                }
            }
            Some(_) => self.problem(ManifestError::BadList {
                file: self.file.to_owned(),
                at,
                reason: "items is not a list",
            }),
        }
    }

    fn converted<T>(
        &mut self,
        converted: Result<Converted<T>, ConvertError>,
        keep: impl FnOnce(&mut ParsedFile, T),
    ) {
        let file = self.file;
        match converted {
            Ok(Converted::Kept { object, warnings }) => {
                keep(&mut self.out, object);
                self.out
                    .problems
                    .extend(warnings.into_iter().map(|warning| ManifestError::Warning {
                        file: file.to_owned(),
                        warning: Box::new(warning),
                    }));
            }
            Ok(Converted::Skipped(skip)) if skip.is_warning() => {
                self.problem(ManifestError::Skipped {
                    file: file.to_owned(),
                    skip: Box::new(skip),
                });
            }
            Ok(Converted::Skipped(skip)) => self.out.skipped.push(skip),
            Err(error) => self.problem(ManifestError::Convert {
                file: file.to_owned(),
                error: Box::new(error),
            }),
        }
    }

    fn decode_failed(&mut self, object: String, error: &serde_json::Error) {
        self.problem(ManifestError::Decode {
            file: self.file.to_owned(),
            object,
            reason: error.to_string(),
        });
    }
}

/// `Service ns/name` when the object has a name, else `Service in document N`.
fn describe(value: &Value, kind: &str, at: Position) -> String {
    let meta = value.get("metadata");
    let field = |f: &str| {
        meta.and_then(|m| m.get(f))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match field("name") {
        Some(name) => format!("{kind} {}/{name}", field("namespace").unwrap_or("default")),
        None => format!("{kind} in {at}"),
    }
}

/// Drops what the proxy never reads (`status` but a well-formed
/// `status.loadBalancer`, whose ingress IPs are frontends, and all of
/// `metadata` but name, namespace and labels), so a mistake there cannot
/// reject the object.
fn prune(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        let load_balancer = map
            .remove("status")
            .and_then(|mut status| status.get_mut("loadBalancer").map(Value::take))
            .filter(|lb| serde_json::from_value::<core::LoadBalancerStatus>(lb.clone()).is_ok());
        if let Some(lb) = load_balancer {
            map.insert(
                "status".to_owned(),
                serde_json::json!({ "loadBalancer": lb }),
            );
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels"));
        }
    }
    value
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]
mod tests;
