//! The module tree of one crate, read from its files the way rustc finds them:
//! `mod x;` in `lib.rs`, `main.rs` or `mod.rs` is `x.rs` or `x/mod.rs` next to
//! it, in `a.rs` it is `a/x.rs` or `a/x/mod.rs`, and `#[path = "…"]` wins.
//!
//! Only parses; decides nothing about imports (that is `imports`). A module is
//! test-only when it is declared under `#[cfg(test)]` (or inside one that is),
//! is a `tests.rs`, or lives under a `tests/` folder.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use syn::{Attribute, Item, Meta, Token, punctuated::Punctuated};

/// A module path inside its crate: `["dataplane", "loader"]`; the root is empty.
pub type ModPath = Vec<String>;

/// One parsed file of the crate.
pub struct SourceFile {
    /// The module the file is.
    pub module: ModPath,
    pub path: PathBuf,
    pub lines: usize,
    pub test_only: bool,
    pub ast: syn::File,
}

/// Every file of a crate and every module (file or inline) it declares.
pub struct Crate {
    pub files: Vec<SourceFile>,
    pub modules: BTreeSet<ModPath>,
}

impl Crate {
    /// Reads the crate whose root file (`lib.rs`, `main.rs`) is `root`.
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let mut krate = Crate {
            files: Vec::new(),
            modules: BTreeSet::from([ModPath::new()]),
        };
        let src = root
            .parent()
            .context("a crate root file has a parent folder")?;
        krate.read_file(src, root, ModPath::new(), false, true)?;
        Ok(krate)
    }

    fn read_file(
        &mut self,
        src: &Path,
        path: &Path,
        module: ModPath,
        declared_for_tests: bool,
        is_root: bool,
    ) -> anyhow::Result<()> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        let test_only = declared_for_tests || is_test_file(src, path);
        // `mod x;` in lib.rs, main.rs or mod.rs: x.rs next to it; in a.rs: a/x.rs.
        let owns_folder = is_root || path.file_name().is_some_and(|n| n == "mod.rs");
        let dir = match (owns_folder, path.parent(), path.file_stem()) {
            (true, Some(parent), _) => parent.to_path_buf(),
            (false, Some(parent), Some(stem)) => parent.join(stem),
            _ => bail!("{} has no parent folder", path.display()),
        };
        let mut children = Vec::new();
        let here = path.parent().unwrap_or(src);
        self.declared(&ast.items, &module, &dir, here, test_only, &mut children)?;
        self.files.push(SourceFile {
            module,
            path: path.to_path_buf(),
            lines: text.lines().count(),
            test_only,
            ast,
        });
        for (child_module, child_path, child_test) in children {
            self.read_file(src, &child_path, child_module, child_test, false)?;
        }
        Ok(())
    }

    /// Records the modules `items` declare and lists the files to read next.
    /// `dir` holds the files of their children, `here` is the declaring file's folder.
    fn declared(
        &mut self,
        items: &[Item],
        module: &ModPath,
        dir: &Path,
        here: &Path,
        test_only: bool,
        files: &mut Vec<(ModPath, PathBuf, bool)>,
    ) -> anyhow::Result<()> {
        for item in items {
            let Item::Mod(m) = item else { continue };
            let name = m.ident.to_string();
            let mut child = module.clone();
            child.push(name.clone());
            let child_test = test_only || cfg_is_off(&m.attrs);
            self.modules.insert(child.clone());
            match &m.content {
                Some((_, inner)) => {
                    self.declared(inner, &child, &dir.join(&name), here, child_test, files)?;
                }
                None => {
                    let file = match path_attr(&m.attrs) {
                        // Relative to the declaring file's folder (rustc's rule
                        // outside inline modules).
                        Some(p) => here.join(p),
                        None => {
                            let flat = dir.join(format!("{name}.rs"));
                            if flat.exists() {
                                flat
                            } else {
                                dir.join(&name).join("mod.rs")
                            }
                        }
                    };
                    if !file.exists() {
                        bail!(
                            "module {} is declared but neither {}.rs nor {}/mod.rs exists under {}",
                            child.join("::"),
                            name,
                            name,
                            dir.display()
                        );
                    }
                    files.push((child, file, child_test));
                }
            }
        }
        Ok(())
    }
}

/// `tests.rs`, or any file under a `tests/` folder of the crate's `src`.
fn is_test_file(src: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(src).unwrap_or(path);
    relative.file_name().is_some_and(|n| n == "tests.rs")
        || relative
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "tests"))
}

fn path_attr(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Whether a `#[cfg(…)]` among `attrs` is certainly false in a non-test build:
/// `test` is false, `not`, `all` and `any` combine, anything else (features,
/// target_arch) is unknown and keeps the item.
pub fn cfg_is_off(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .filter_map(|a| a.parse_args::<Meta>().ok())
        .any(|meta| eval(&meta) == Some(false))
}

fn eval(meta: &Meta) -> Option<bool> {
    match meta {
        Meta::Path(p) if p.is_ident("test") => Some(false),
        Meta::List(list) => {
            let args = list
                .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                .ok()?;
            let values: Vec<Option<bool>> = args.iter().map(eval).collect();
            if list.path.is_ident("not") {
                values.first().copied().flatten().map(|v| !v)
            } else if list.path.is_ident("all") {
                if values.contains(&Some(false)) {
                    Some(false)
                } else if values.iter().all(|v| *v == Some(true)) {
                    Some(true)
                } else {
                    None
                }
            } else if list.path.is_ident("any") {
                if values.contains(&Some(true)) {
                    Some(true)
                } else if values.iter().all(|v| *v == Some(false)) {
                    Some(false)
                } else {
                    None
                }
            } else {
                None
            }
        }
        _ => None,
    }
}
