//! Which module uses which, from the non-test code of a crate: every path that
//! starts with `crate::`, `super::` or `self::` (use trees, expression and type
//! paths, and the same in macro arguments), resolved to the module it names.
//!
//! An edge joins two modules at the level where their paths part: top-level
//! modules (`datapath → userspace`), or siblings inside one folder
//! (`dataplane::loader → dataplane::tc`). A module using its own ancestor or
//! descendant makes no edge. Items under `#[cfg(test)]` and test-only files
//! are skipped.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use proc_macro2::{TokenStream, TokenTree};
use syn::{
    Attribute, ImplItem, Item, TraitItem, UseTree,
    visit::{self, Visit},
};

use super::tree::{Crate, ModPath, cfg_is_off};

/// Where one edge comes from: the first use found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    pub file: PathBuf,
    pub line: usize,
    /// The path as written, `crate::userspace::Served`.
    pub text: String,
}

/// Edges between sibling modules, each with the first use that makes it.
pub type Graph = BTreeMap<(ModPath, ModPath), Evidence>;

/// The module graph of a crate's non-test code.
pub fn graph(krate: &Crate) -> Graph {
    let mut graph = Graph::new();
    for file in krate.files.iter().filter(|f| !f.test_only) {
        let mut collector = Collector {
            module: file.module.clone(),
            refs: Vec::new(),
        };
        collector.visit_file(&file.ast);
        for r in collector.refs {
            let Some(target) = resolve(&krate.modules, &r.from, &r.segments) else {
                continue;
            };
            if let Some(edge) = edge(&r.from, &target) {
                let evidence = Evidence {
                    file: file.path.clone(),
                    line: r.line,
                    text: r.segments.join("::"),
                };
                graph
                    .entry(edge)
                    .and_modify(|e| *e = std::cmp::min(e.clone(), evidence.clone()))
                    .or_insert(evidence);
            }
        }
    }
    graph
}

/// The sibling pair two modules meet at, or `None` when one contains the other.
fn edge(from: &ModPath, to: &ModPath) -> Option<(ModPath, ModPath)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common >= from.len() || common >= to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

/// The module a path written in `from` names: `crate::`, `super::` and `self::`
/// made absolute, then the longest prefix that is a module (the rest names an
/// item inside it).
fn resolve(modules: &BTreeSet<ModPath>, from: &ModPath, segments: &[String]) -> Option<ModPath> {
    let (mut base, rest) = match segments.first().map(String::as_str) {
        Some("crate") => (ModPath::new(), &segments[1..]),
        Some("self") => (from.clone(), &segments[1..]),
        Some("super") => (from.clone(), segments),
        _ => return None,
    };
    let mut rest = rest;
    while let Some(first) = rest.first() {
        if first != "super" {
            break;
        }
        base.pop()?;
        rest = &rest[1..];
    }
    let mut target = base;
    for segment in rest {
        target.push(segment.clone());
        if !modules.contains(&target) {
            target.pop();
            break;
        }
    }
    Some(target)
}

struct Ref {
    from: ModPath,
    segments: Vec<String>,
    line: usize,
}

struct Collector {
    /// The module being read (inline modules push onto it).
    module: ModPath,
    refs: Vec<Ref>,
}

impl Collector {
    fn push(&mut self, segments: Vec<String>, line: usize) {
        if matches!(
            segments.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) {
            self.refs.push(Ref {
                from: self.module.clone(),
                segments,
                line,
            });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &UseTree, line: usize) {
        match tree {
            UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.push(full, line);
            }
            UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.push(full, line);
            }
            UseTree::Glob(_) => self.push(prefix.clone(), line),
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree, line);
                }
            }
        }
    }

    /// `crate::a::b` and `super::x` inside macro arguments (`format!`, `matches!`,
    /// `tracing::info!`), which syn leaves as tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(id) if id == "crate" || id == "super" || id == "self" => {
                    let line = id.span().start().line;
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if segments.len() > 1 {
                        self.push(segments, line);
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast Item) {
        if cfg_is_off(item_attrs(item)) {
            return;
        }
        match item {
            Item::Mod(m) => {
                // A `mod x;` is its own file, read on its own.
                if let Some((_, items)) = &m.content {
                    self.module.push(m.ident.to_string());
                    for item in items {
                        self.visit_item(item);
                    }
                    self.module.pop();
                }
            }
            Item::Use(u) => {
                let line = u.use_token.span.start().line;
                self.use_tree(&mut Vec::new(), &u.tree, line);
            }
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(i) => &i.attrs,
            ImplItem::Fn(i) => &i.attrs,
            ImplItem::Type(i) => &i.attrs,
            ImplItem::Macro(i) => &i.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !cfg_is_off(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        let attrs = match item {
            TraitItem::Const(i) => &i.attrs,
            TraitItem::Fn(i) => &i.attrs,
            TraitItem::Type(i) => &i.attrs,
            TraitItem::Macro(i) => &i.attrs,
            _ => return visit::visit_trait_item(self, item),
        };
        if !cfg_is_off(attrs) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_field(&mut self, field: &'ast syn::Field) {
        if !cfg_is_off(&field.attrs) {
            visit::visit_field(self, field);
        }
    }

    fn visit_variant(&mut self, variant: &'ast syn::Variant) {
        if !cfg_is_off(&variant.attrs) {
            visit::visit_variant(self, variant);
        }
    }

    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if !cfg_is_off(&arm.attrs) {
            visit::visit_arm(self, arm);
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if !cfg_is_off(&local.attrs) {
            visit::visit_local(self, local);
        }
    }

    // `#[cfg]`, `#[doc]`, `#[serde(…)]`: not uses of a module.
    fn visit_attribute(&mut self, _: &'ast Attribute) {}

    // `pub(in crate::x)` names an ancestor; it uses nothing.
    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if let Some(first) = path.segments.first() {
            let line = first.ident.span().start().line;
            self.push(
                path.segments.iter().map(|s| s.ident.to_string()).collect(),
                line,
            );
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }
}
