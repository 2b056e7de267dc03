//! `cargo xtask check-layout`: the layout rules the compiler does not enforce
//! (issue 17), run by `cargo xtask test` before clippy.
//!
//! - No import loop among the modules of `proxy`, `proxy-common` and
//!   `proxy-ebpf` (each crate root on its own), counting non-test code only:
//!   neither between top-level modules (`datapath ⇄ userspace`) nor between
//!   siblings inside one folder (`dataplane::loader ⇄ dataplane::tc`). A child
//!   using its parent is fine. A use through a re-export at the crate root
//!   (`crate::Thing`) counts as a use of the root, so it makes no edge.
//! - No production file over [`MAX_LINES`] lines in `proxy/src`,
//!   `proxy-common/src` and `proxy-ebpf/src`. Test-only files (`tests.rs`,
//!   files under a `tests/` folder, modules declared under `#[cfg(test)]`) are
//!   exempt.
//!
//! Reads source files only; builds nothing.

mod imports;
#[cfg(test)]
mod tests;
mod tree;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::bail;

use imports::Evidence;
use tree::{Crate, ModPath};

/// The longest a production file may be.
pub const MAX_LINES: usize = 900;

/// What to check, relative to nothing: paths are as given.
pub struct Rules {
    /// Crate root files whose module graphs must have no loop.
    pub loop_roots: Vec<PathBuf>,
    /// Crate root files whose production files must stay short.
    pub length_roots: Vec<PathBuf>,
    pub max_lines: usize,
}

impl Rules {
    /// The rules for this workspace.
    pub fn workspace(root: &Path) -> Self {
        let roots = |krate: &str| -> Vec<PathBuf> {
            ["lib.rs", "main.rs"]
                .iter()
                .map(|f| root.join(krate).join("src").join(f))
                .filter(|p| p.exists())
                .collect()
        };
        // The kernel crates have no loop today; checking them costs nothing.
        let crates = || ["proxy", "proxy-common", "proxy-ebpf"].into_iter();
        Self {
            loop_roots: crates().flat_map(roots).collect(),
            length_roots: crates().flat_map(roots).collect(),
            max_lines: MAX_LINES,
        }
    }
}

/// Modules that use each other, directly or through others.
#[derive(Debug, PartialEq, Eq)]
pub struct Loop {
    /// The crate root the modules belong to.
    pub krate: PathBuf,
    pub modules: Vec<ModPath>,
    /// Every edge between them, with the first use that makes it.
    pub edges: Vec<(ModPath, ModPath, Evidence)>,
}

/// Everything the check found; empty when the layout is fine.
#[derive(Debug, Default)]
pub struct Report {
    pub loops: Vec<Loop>,
    /// Production files over the limit, with their line counts.
    pub long_files: Vec<(PathBuf, usize)>,
    pub max_lines: usize,
    /// Paths in the report are shown relative to this.
    pub base: PathBuf,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.loops.is_empty() && self.long_files.is_empty()
    }
}

/// Runs the checks on this workspace; fails with the report when a rule is broken.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let mut report = check(&Rules::workspace(root))?;
    report.base = root.to_path_buf();
    if !report.is_clean() {
        bail!("check-layout failed:\n{report}");
    }
    eprintln!(
        "check-layout: no import loop, no production file over {} lines",
        report.max_lines
    );
    Ok(())
}

/// Reads the crates the rules name and reports what breaks them.
pub fn check(rules: &Rules) -> anyhow::Result<Report> {
    let mut report = Report {
        max_lines: rules.max_lines,
        ..Report::default()
    };
    for root in &rules.loop_roots {
        let krate = Crate::read(root)?;
        report.loops.extend(loops(root, &imports::graph(&krate)));
    }
    let mut seen = BTreeSet::new();
    for root in &rules.length_roots {
        let krate = Crate::read(root)?;
        for file in krate.files.iter().filter(|f| !f.test_only) {
            if file.lines > rules.max_lines && seen.insert(file.path.clone()) {
                report.long_files.push((file.path.clone(), file.lines));
            }
        }
    }
    report.long_files.sort();
    Ok(report)
}

/// Every strongly connected set of two or more modules (Tarjan), as a loop
/// with all the edges inside it.
fn loops(krate: &Path, graph: &imports::Graph) -> Vec<Loop> {
    let mut next: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        next.entry(from).or_default().push(to);
        next.entry(to).or_default();
    }
    let mut tarjan = Tarjan {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in next.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    let mut found: Vec<Loop> = tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|component| {
            let members: BTreeSet<&ModPath> = component.iter().copied().collect();
            let edges = graph
                .iter()
                .filter(|((from, to), _)| members.contains(from) && members.contains(to))
                .map(|((from, to), ev)| (from.clone(), to.clone(), ev.clone()))
                .collect();
            Loop {
                krate: krate.to_path_buf(),
                modules: members.into_iter().cloned().collect(),
                edges,
            }
        })
        .collect();
    found.sort_by(|a, b| a.modules.cmp(&b.modules));
    found
}

struct Tarjan<'g> {
    next: &'g BTreeMap<&'g ModPath, Vec<&'g ModPath>>,
    index: BTreeMap<&'g ModPath, usize>,
    low: BTreeMap<&'g ModPath, usize>,
    stack: Vec<&'g ModPath>,
    on_stack: BTreeSet<&'g ModPath>,
    components: Vec<Vec<&'g ModPath>>,
}

impl<'g> Tarjan<'g> {
    // Recursive: the graphs are a few dozen modules deep at most.
    fn visit(&mut self, node: &'g ModPath) {
        let n = self.index.len();
        self.index.insert(node, n);
        self.low.insert(node, n);
        self.stack.push(node);
        self.on_stack.insert(node);
        let next = self.next.get(node).cloned().unwrap_or_default();
        for to in next {
            if !self.index.contains_key(to) {
                self.visit(to);
                let low = self.low[to].min(self.low[node]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(to) {
                let low = self.index[to].min(self.low[node]);
                self.low.insert(node, low);
            }
        }
        if self.low[node] == self.index[node] {
            let mut component = Vec::new();
            while let Some(top) = self.stack.pop() {
                self.on_stack.remove(top);
                component.push(top);
                if top == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

fn module_name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |p: &Path| {
            p.strip_prefix(&self.base)
                .unwrap_or(p)
                .display()
                .to_string()
        };
        for l in &self.loops {
            let names: Vec<String> = l.modules.iter().map(module_name).collect();
            writeln!(
                f,
                "import loop in {} among {}:",
                show(&l.krate),
                names.join(", ")
            )?;
            for (from, to, ev) in &l.edges {
                writeln!(
                    f,
                    "  {} → {}: {}:{} uses `{}`",
                    module_name(from),
                    module_name(to),
                    show(&ev.file),
                    ev.line,
                    ev.text
                )?;
            }
        }
        if !self.loops.is_empty() {
            writeln!(
                f,
                "  (non-test code only; move what both sides need into a module both import)"
            )?;
        }
        for (path, lines) in &self.long_files {
            writeln!(
                f,
                "{}: {lines} lines, over the {} a production file may have (split it along its seams, or move its tests out)",
                show(path),
                self.max_lines
            )?;
        }
        Ok(())
    }
}
