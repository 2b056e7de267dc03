//! Limits on what one manifest file may cost to parse: its size, how deep
//! its values nest and how many values it expands to (aliases included).
//!
//! The YAML crate (`serde_norway`) has fixed guards of its own (a recursion
//! limit of 128 and an alias-replay limit proportional to the number of
//! events), but neither is configurable and neither bounds memory: a padded
//! alias bomb of 2 MB expands to gigabytes, and the crate reads every event
//! of a document before it checks depth. So:
//! - the size is checked before reading (`dir`);
//! - a bounded pre-scan ([`check_flow_depth`]) rejects deep flow nesting
//!   (`[[[[…`) before the crate sees the text: block nesting (`- - - …`)
//!   is cheap for the crate and is caught by the next guard;
//! - [`Budget`] builds each document's value itself, counting every node it
//!   produces (alias replays included) and the depth, and stops at the first
//!   one over a limit: an alias bomb is stopped after `max_nodes` nodes.
//!
//! Pure: works on the text it is given.

use std::{cell::Cell, fmt};

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_norway::{Mapping, Value, value::Tag, value::TaggedValue};

/// The default of `--manifest-max-bytes`: 8 MiB (a ConfigMap holds at most 1 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
/// The default of `--manifest-max-depth`: Kubernetes objects nest about 10 deep.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// The most `--manifest-max-depth` may be: the YAML crate's own recursion limit.
pub const MAX_DEPTH_CEILING: usize = 128;
/// The default of `--manifest-max-nodes`: values per file after alias
/// expansion (a Service is about 30).
pub const DEFAULT_MAX_NODES: usize = 1_000_000;

/// The limits one file is parsed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes per file.
    pub max_bytes: u64,
    /// Nesting of sequences and mappings.
    pub max_depth: usize,
    /// Values (scalars, sequences, mappings) per file, each alias counted as
    /// everything it expands to.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

/// Which limit a file went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// Longer than `max_bytes`.
    Size {
        limit: u64,
    },
    Depth {
        limit: usize,
    },
    Nodes {
        limit: usize,
    },
}

impl Exceeded {
    /// The `reason` label of `proxy_config_rejects_total`.
    pub fn label(self) -> &'static str {
        match self {
            Exceeded::Size { .. } => "too_large",
            Exceeded::Depth { .. } => "too_deep",
            Exceeded::Nodes { .. } => "too_many_nodes",
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Size { limit } => {
                write!(f, "larger than {limit} bytes (--manifest-max-bytes)")
            }
            Exceeded::Depth { limit } => write!(
                f,
                "nested deeper than {limit} levels (--manifest-max-depth)"
            ),
            Exceeded::Nodes { limit } => write!(
                f,
                "more than {limit} values once aliases are expanded (--manifest-max-nodes)"
            ),
        }
    }
}

/// Rejects text whose flow collections (`[`, `{`) nest deeper than
/// `max_depth`, in one pass and without allocating. Brackets inside quoted
/// scalars and comments do not count; in plain scalars they may, which can
/// only over-count a text nobody writes (dozens of unclosed brackets).
pub fn check_flow_depth(text: &str, max_depth: usize) -> Result<(), Exceeded> {
    #[derive(Clone, Copy, PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        Comment,
    }
    let mut state = In::Plain;
    let mut depth = 0usize;
    // The byte before, for whether a quote or `#` starts a token.
    let mut prev = b'\n';
    let mut escaped = false;
    for &b in text.as_bytes() {
        match state {
            In::Plain => match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return Err(Exceeded::Depth { limit: max_depth });
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'\'' | b'"' if starts_token(prev) => {
                    state = if b == b'\'' { In::Single } else { In::Double };
                }
                b'#' if prev.is_ascii_whitespace() => state = In::Comment,
                _ => {}
            },
            In::Single => {
                // `''` inside is an escaped quote: leaving and re-entering
                // at once is the same thing.
                if b == b'\'' {
                    state = In::Plain;
                }
            }
            In::Double => {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    state = In::Plain;
                }
            }
            In::Comment => {
                if b == b'\n' {
                    state = In::Plain;
                }
            }
        }
        prev = b;
    }
    Ok(())
}

/// Whether a quote after `prev` opens a quoted scalar (not `don't`).
fn starts_token(prev: u8) -> bool {
    prev.is_ascii_whitespace() || matches!(prev, b'[' | b'{' | b',' | b':' | b'-' | b'?')
}

/// The shared count of one file's nodes.
#[derive(Debug)]
pub struct Counter {
    limits: Limits,
    nodes: Cell<usize>,
    exceeded: Cell<Option<Exceeded>>,
}

impl Counter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            nodes: Cell::new(0),
            exceeded: Cell::new(None),
        }
    }

    /// The limit that stopped the parse, if one did.
    pub fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }

    fn fail<E: de::Error>(&self, exceeded: Exceeded) -> E {
        self.exceeded.set(Some(exceeded));
        E::custom(exceeded)
    }

    /// Counts one node at `depth`.
    fn node<E: de::Error>(&self, depth: usize) -> Result<(), E> {
        if depth > self.limits.max_depth {
            return Err(self.fail(Exceeded::Depth {
                limit: self.limits.max_depth,
            }));
        }
        let nodes = self.nodes.get() + 1;
        if nodes > self.limits.max_nodes {
            return Err(self.fail(Exceeded::Nodes {
                limit: self.limits.max_nodes,
            }));
        }
        self.nodes.set(nodes);
        Ok(())
    }
}

/// Deserializes one YAML value as `serde_norway::Value` does, counting
/// against a [`Counter`].
#[derive(Clone, Copy)]
pub struct Budget<'c> {
    counter: &'c Counter,
    depth: usize,
}

impl<'c> Budget<'c> {
    /// The seed of a document's root.
    pub fn root(counter: &'c Counter) -> Self {
        Self { counter, depth: 0 }
    }

    fn child(self) -> Self {
        Self {
            depth: self.depth + 1,
            ..self
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.counter.node(self.depth)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.counter.node(self.depth)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.counter.node(self.depth)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let value = map.next_value_seed(self.child())?;
            if mapping.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate entry with key {}",
                    serde_json::to_string(&key).unwrap_or_else(|_| "(not printable)".to_owned())
                )));
            }
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // How serde_norway hands over a `!tag value`.
        self.counter.node(self.depth)?;
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(self.child())?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use super::*;

    #[test]
    fn flow_depth_counts_brackets_outside_quotes_and_comments() {
        assert_eq!(check_flow_depth("a: [[1], {b: [2]}]", 3), Ok(()));
        assert_eq!(
            check_flow_depth("a: [[[1]]]", 2),
            Err(Exceeded::Depth { limit: 2 })
        );
        let quoted = format!(
            "a: '{0}'\nb: \"{0}\\\"{0}\"\n# {0}\nc: x # {0}\n",
            "[".repeat(100)
        );
        assert_eq!(check_flow_depth(&quoted, 2), Ok(()));
        // An apostrophe inside a plain scalar opens nothing.
        let text = format!("a: don't\nb: {}", "[".repeat(10));
        assert!(check_flow_depth(&text, 5).is_err());
        // Closed brackets give their level back.
        assert_eq!(check_flow_depth(&"[]".repeat(1_000), 1), Ok(()));
    }

    fn parse(text: &str, limits: Limits) -> Result<Value, Option<Exceeded>> {
        let counter = Counter::new(limits);
        let de = serde_norway::Deserializer::from_str(text);
        Budget::root(&counter)
            .deserialize(de)
            .map_err(|_| counter.exceeded())
    }

    #[test]
    fn budget_builds_what_serde_norway_builds() {
        let text = "a: [1, -2, 3.5, true, null, x]\nb: &x {c: d}\ne: *x\nf: !t 5\n";
        let ours = parse(text, Limits::default()).unwrap();
        let theirs: Value = serde_norway::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn budget_stops_an_alias_bomb_at_the_node_limit() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..6 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let limits = Limits {
            max_nodes: 10_000,
            ..Limits::default()
        };
        assert_eq!(
            parse(&text, limits),
            Err(Some(Exceeded::Nodes { limit: 10_000 }))
        );
    }

    #[test]
    fn budget_stops_block_nesting_at_the_depth_limit() {
        let text = format!("{}x\n", "- ".repeat(20));
        let limits = Limits {
            max_depth: 10,
            ..Limits::default()
        };
        assert_eq!(
            parse(&text, limits),
            Err(Some(Exceeded::Depth { limit: 10 }))
        );
        assert!(parse(&text, Limits::default()).is_ok());
    }
}
