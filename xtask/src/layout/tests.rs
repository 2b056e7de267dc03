//! The layout check on small crates written to a temporary folder.

use std::{fs, path::Path};

use super::{Rules, check, tree::ModPath};

/// Writes `files` (path, contents) under a fresh folder.
fn crate_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    dir
}

fn rules(dir: &Path, max_lines: usize) -> Rules {
    Rules {
        loop_roots: vec![dir.join("src/lib.rs")],
        length_roots: vec![dir.join("src/lib.rs")],
        max_lines,
    }
}

fn m(path: &str) -> ModPath {
    path.split("::").map(str::to_owned).collect()
}

/// The loops found, each as its module names.
fn loops(files: &[(&str, &str)]) -> Vec<Vec<ModPath>> {
    let dir = crate_with(files);
    let report = check(&rules(dir.path(), 900)).expect("check");
    report.loops.into_iter().map(|l| l.modules).collect()
}

#[test]
fn top_level_loop_is_found_with_the_file_that_makes_each_edge() {
    let dir = crate_with(&[
        ("src/lib.rs", "pub mod datapath;\npub mod userspace;\n"),
        (
            "src/datapath.rs",
            "//! Doc.\nuse crate::userspace::Served;\npub struct Datapath;\n",
        ),
        (
            "src/userspace/mod.rs",
            "pub mod served;\npub use served::Served;\n",
        ),
        (
            "src/userspace/served.rs",
            "pub struct Served;\nfn f() -> crate::datapath::Datapath { crate::datapath::Datapath }\n",
        ),
    ]);
    let mut report = check(&rules(dir.path(), 900)).expect("check");
    assert_eq!(report.loops.len(), 1, "{report}");
    let found = &report.loops[0];
    assert_eq!(found.modules, [m("datapath"), m("userspace")]);
    let edges: Vec<_> = found
        .edges
        .iter()
        .map(|(from, to, ev)| (from.clone(), to.clone(), ev.line, ev.text.clone()))
        .collect();
    assert_eq!(
        edges,
        [
            (
                m("datapath"),
                m("userspace"),
                2,
                "crate::userspace::Served".to_owned()
            ),
            (
                m("userspace"),
                m("datapath"),
                2,
                "crate::datapath::Datapath".to_owned()
            ),
        ]
    );
    assert!(found.edges[1].2.file.ends_with("src/userspace/served.rs"));
    report.base = dir.path().to_path_buf();
    let text = report.to_string();
    assert!(
        text.contains("import loop in src/lib.rs among datapath, userspace:"),
        "{text}"
    );
    assert!(
        text.contains(
            "userspace → datapath: src/userspace/served.rs:2 uses `crate::datapath::Datapath`"
        ),
        "{text}"
    );
}

#[test]
fn sibling_loop_inside_a_folder_is_found_through_super() {
    let found = loops(&[
        ("src/lib.rs", "pub mod dataplane;\n"),
        ("src/dataplane/mod.rs", "pub mod loader;\npub mod tc;\n"),
        (
            "src/dataplane/loader.rs",
            "use super::tc::{attach, Drift};\npub struct LoadError;\n",
        ),
        (
            "src/dataplane/tc.rs",
            "pub fn attach() -> Result<(), super::loader::LoadError> { Ok(()) }\n",
        ),
    ]);
    assert_eq!(found, [vec![m("dataplane::loader"), m("dataplane::tc")]]);
}

#[test]
fn no_loop_when_the_uses_go_one_way_or_to_a_parent() {
    let found = loops(&[
        (
            "src/lib.rs",
            "pub mod model;\npub mod plan;\npub struct Root;\n",
        ),
        (
            "src/model/mod.rs",
            "pub mod types;\nuse crate::Root;\npub use types::Desired;\n",
        ),
        // A child using its parent and the crate root is fine.
        (
            "src/model/types.rs",
            "use super::super::Root;\nuse crate::model::*;\npub struct Desired;\n",
        ),
        (
            "src/plan/mod.rs",
            "use crate::model::{self, types::Desired};\npub fn plan(_: &Desired) {}\n",
        ),
    ]);
    assert_eq!(found, Vec::<Vec<ModPath>>::new());
}

#[test]
fn test_only_code_makes_no_edge() {
    let found = loops(&[
        ("src/lib.rs", "pub mod model;\npub mod plan;\n"),
        (
            "src/model/mod.rs",
            concat!(
                "pub struct Desired;\n",
                // A test module in its own file, a test item, an inline test module.
                "#[cfg(test)]\nmod kit;\n",
                "#[cfg(test)]\nuse crate::plan::plan;\n",
                "#[cfg(all(test, feature = \"x\"))]\nfn f() { crate::plan::plan(); }\n",
                "#[cfg(test)]\nmod inline_tests { use crate::plan::plan; }\n",
                "mod tests;\n",
                "mod tests2 { #[cfg(test)] fn g() { crate::plan::plan(); } }\n",
            ),
        ),
        ("src/model/kit.rs", "pub use crate::plan::plan;\n"),
        // A tests.rs is test-only even if declared without cfg(test).
        ("src/model/tests.rs", "use crate::plan::plan;\n"),
        (
            "src/plan/mod.rs",
            "#[cfg(not(test))]\nuse crate::model::Desired;\npub fn plan() {}\n",
        ),
    ]);
    assert_eq!(found, Vec::<Vec<ModPath>>::new());
}

#[test]
fn paths_in_macro_arguments_and_inline_modules_count() {
    let found = loops(&[
        ("src/lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "src/a.rs",
            "pub mod inner {\n    pub fn f() { println!(\"{}\", crate::b::NAME); }\n}\n",
        ),
        // A non-mod.rs file with children in a folder of its name.
        ("src/b.rs", "pub mod c;\npub const NAME: &str = \"b\";\n"),
        ("src/b/c.rs", "pub fn g() { crate::a::inner::f() }\n"),
    ]);
    assert_eq!(found, [vec![m("a"), m("b")]]);
}

#[test]
fn three_modules_in_a_ring_are_one_loop() {
    let found = loops(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
        ("src/b.rs", "use crate::c::C;\npub struct B;\n"),
        ("src/c.rs", "use crate::a::A;\npub struct C;\n"),
        ("src/d.rs", "use crate::a::A;\n"),
    ]);
    assert_eq!(found, [vec![m("a"), m("b"), m("c")]]);
}

#[test]
fn long_production_files_are_reported_and_test_files_are_not() {
    let long = "// line\n".repeat(11);
    let dir = crate_with(&[
        (
            "src/lib.rs",
            "pub mod big;\npub mod ok;\n#[cfg(test)]\nmod kit;\n",
        ),
        ("src/big/mod.rs", &format!("mod tests;\n{long}")),
        ("src/big/tests.rs", &long),
        ("src/ok.rs", &"// line\n".repeat(10)),
        ("src/kit.rs", &long),
        ("src/orphan.rs", &long),
    ]);
    let report = check(&rules(dir.path(), 10)).expect("check");
    let long: Vec<_> = report
        .long_files
        .iter()
        .map(|(p, n)| (p.strip_prefix(dir.path()).expect("inside").to_owned(), *n))
        .collect();
    assert_eq!(long, [(Path::new("src/big/mod.rs").to_owned(), 12)]);
    assert!(report.loops.is_empty());
}

#[test]
fn a_module_without_its_file_is_an_error() {
    let dir = crate_with(&[("src/lib.rs", "pub mod gone;\n")]);
    let err = check(&rules(dir.path(), 900)).expect_err("a missing module file fails");
    assert!(format!("{err:#}").contains("gone"), "{err:#}");
}
