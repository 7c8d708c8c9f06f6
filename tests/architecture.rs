//! The layering rules `docs/architecture.md` states, checked on the source as it is:
//!
//! - every file of `src/` is in one layer of [`LAYERS`] and imports only its own layer and
//!   those below;
//! - imports point down: following `crate::` and `super::` paths between the files of `src/`,
//!   no cycle joins more than two files (two files that name each other, a module and its
//!   parent, are tolerated; three or more are a tangle that no layer order explains);
//! - every SQL statement and every `rusqlite` use lives in the SQLite backend of the store
//!   (`src/store/sqlite.rs`): the store's traits and records (`src/store/mod.rs`) name no
//!   backend type, so a second backend is one more module beside it;
//! - no file outside `src/store/` names a store backend (its module path or an item it
//!   declares): the engine, commands and output hold `Arc<dyn Store>` / `dyn StoreReader`,
//!   and `store::open` / `store::open_reader` choose the backend;
//! - no file outside `src/transport/` names a transport: adding one is its module plus its
//!   line in the registry.
//!
//! The reading is textual (no compiler): comments and the trailing `#[cfg(test)] mod tests`
//! block are left out; `crate::a::b::C` counts as an import of the longest module-file prefix
//! (`src/a/b.rs` or `src/a/b/mod.rs`, else `src/a.rs` ...), `use crate::{a, b::{c, d}}` as one
//! import per leaf. Each rule also checks itself on a small tree it writes, so a reader that
//! stopped seeing imports fails here instead of passing everything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first, each a list of `src/` path prefixes (a directory prefix ends in
/// `/`); docs/architecture.md describes them. A file may import its own layer and the ones
/// below it, never one above.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "low",
        &[
            "lib.rs",
            "main.rs",
            "model.rs",
            "units.rs",
            "digest.rs",
            "identity.rs",
            "located.rs",
            "sanitize.rs",
            "limits.rs",
            "exit.rs",
            "child_env.rs",
            "template.rs",
        ],
    ),
    ("store", &["store/"]),
    ("plug-ins", &["transport/", "parser/"]),
    ("inventory", &["inventory/"]),
    ("config", &["playbook.rs", "rollout.rs", "notify/config.rs"]),
    ("plan", &["plan.rs"]),
    (
        "engine",
        &[
            "pipeline.rs",
            "leftovers.rs",
            "sweep.rs",
            "fleet.rs",
            "events.rs",
            "progress.rs",
        ],
    ),
    ("output", &["report/", "notify/"]),
    (
        "commands",
        &["app.rs", "schedule.rs", "cleanup.rs", "contain/"],
    ),
];

/// The layer of a `src/` file: its index in [`LAYERS`] (the longest matching prefix wins,
/// so `notify/config.rs` is config while the rest of `notify/` is output).
fn layer_of(rel: &Path) -> Option<usize> {
    let rel = rel.to_string_lossy().replace('\\', "/");
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, prefixes))| prefixes.iter().map(move |p| (i, *p)))
        .filter(|(_, p)| {
            if p.ends_with('/') {
                rel.starts_with(p)
            } else {
                rel == *p
            }
        })
        .max_by_key(|(_, p)| p.len())
        .map(|(i, _)| i)
}

/// The files that may hold SQL (relative to `src/`): the store's SQLite backend.
const STORE_FILES: &[&str] = &["store/sqlite.rs", "store/postgres.rs"];

/// Source text without comments, string contents kept (SQL lives in strings), and without
/// the trailing unit-test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        // A char literal such as '"' or '\"' must not open a string.
        if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
            out.push_str("' '");
            i += 3;
            continue;
        }
        if c == b'\'' && b.get(i + 1) == Some(&b'\\') {
            let close = text[i + 3..].find('\'').map_or(b.len(), |k| i + 3 + k + 1);
            out.push_str("' '");
            i = close;
            continue;
        }
        // A raw string r#"..."# may hold quotes: copied whole.
        if c == b'r' && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"')) {
            let hashes = text[i + 1..].bytes().take_while(|&h| h == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let end = format!("\"{}", "#".repeat(hashes));
                let body = i + 2 + hashes;
                let close = text[body..]
                    .find(&end)
                    .map_or(b.len(), |k| body + k + end.len());
                out.push_str(&text[i..close]);
                i = close;
                continue;
            }
        }
        if c == b'"' {
            in_str = true;
        }
        out.push(if c.is_ascii() { c as char } else { ' ' });
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths named after `prefix` (`crate::` or `super::`), each a list of segments; a brace
/// group yields one path per leaf.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let start = from + pos;
        from = start + prefix.len();
        // `x_crate::` is another name; `super::super::` is read from its first `super`.
        let before = &code[..start];
        if before.chars().next_back().is_some_and(is_ident) || before.ends_with("::") {
            continue;
        }
        let mut rest = &code[from..];
        let mut base = Vec::new();
        parse_tree(&mut rest, &mut base, &mut out);
    }
    out
}

/// Reads `a::b::{c, d::e}` from the front of `s`, pushing every complete path.
fn parse_tree(s: &mut &str, base: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let depth = base.len();
    loop {
        *s = s.trim_start();
        if let Some(r) = s.strip_prefix('{') {
            *s = r;
            loop {
                *s = s.trim_start();
                if let Some(r) = s.strip_prefix('}') {
                    *s = r;
                    break;
                }
                if s.is_empty() {
                    break;
                }
                let mut inner = base.clone();
                parse_tree(s, &mut inner, out);
                *s = s.trim_start();
                if let Some(r) = s.strip_prefix(',') {
                    *s = r;
                } else if !s.starts_with('}') {
                    break;
                }
            }
            base.truncate(depth);
            return;
        }
        let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
        if end == 0 {
            break;
        }
        base.push(s[..end].to_string());
        *s = &s[end..];
        match s.strip_prefix("::") {
            Some(r) => *s = r,
            None => break,
        }
    }
    if base.len() > depth || depth > 0 {
        out.push(base.clone());
    }
}

/// A source tree: module path (segments) → file (relative to the root).
struct Tree {
    files: BTreeMap<PathBuf, String>,
    modules: BTreeMap<Vec<String>, PathBuf>,
}

fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn read_tree(root: &Path) -> Tree {
    fn walk(dir: &Path, root: &Path, files: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
                files.insert(
                    p.strip_prefix(root).expect("under root").to_path_buf(),
                    text,
                );
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    let modules = files
        .keys()
        .map(|rel| (module_of(rel), rel.clone()))
        .collect();
    Tree { files, modules }
}

impl Tree {
    fn resolve(&self, path: &[String]) -> Option<&PathBuf> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.modules.get(&path[..n]))
    }

    /// file → the files it imports.
    fn imports(&self) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut edges = BTreeMap::new();
        for (rel, text) in &self.files {
            let code = code_of(text);
            let me = module_of(rel);
            let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
            let mut targets = BTreeSet::new();
            for p in paths_after(&code, "crate::") {
                targets.extend(self.resolve(&p).cloned());
            }
            for p in paths_after(&code, "super::") {
                let ups = p.iter().take_while(|s| *s == "super").count();
                let mut full = parent[..parent.len().saturating_sub(ups)].to_vec();
                full.extend(p.into_iter().skip(ups));
                targets.extend(self.resolve(&full).cloned());
            }
            targets.remove(rel);
            edges.insert(rel.clone(), targets);
        }
        edges
    }
}

/// Strongly connected components with more than `max` files (Tarjan).
fn tangles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>, max: usize) -> Vec<BTreeSet<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        found: Vec<BTreeSet<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.insert(w.clone());
                if w == v {
                    break;
                }
            }
            s.found.push(comp);
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found.into_iter().filter(|c| c.len() > max).collect()
}

/// Lines of `tree` (outside the store files) that hold SQL or touch rusqlite.
fn sql_outside_store(tree: &Tree, store: &[&str]) -> Vec<String> {
    const MARKERS: &[&str] = &[
        "rusqlite",
        "\"SELECT ",
        "\"INSERT ",
        "\"UPDATE ",
        "\"DELETE ",
        "\"CREATE ",
        "\"ALTER ",
        "\"DROP ",
        "\"PRAGMA ",
        "\"BEGIN",
        " FROM ",
        " WHERE ",
    ];
    let mut found = Vec::new();
    for (rel, text) in &tree.files {
        if store.iter().any(|s| rel == Path::new(s)) {
            continue;
        }
        for (n, line) in code_of(text).lines().enumerate() {
            let upper_sql = |m: &str| {
                if m.starts_with(' ') {
                    // " FROM " / " WHERE " only inside a string literal.
                    line.matches('"').count() >= 2 && line.contains(m)
                } else {
                    line.contains(m)
                }
            };
            if MARKERS.iter().any(|m| upper_sql(m)) {
                found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

fn src_tree() -> Tree {
    read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// A scratch tree with the given files.
fn scratch(files: &[(&str, &str)]) -> (tempfile::TempDir, Tree) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    let tree = read_tree(dir.path());
    (dir, tree)
}

#[test]
fn the_cycle_reader_sees_a_three_file_tangle_and_tolerates_two() {
    let (_d, tree) = scratch(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod n;\n"),
        (
            "a.rs",
            "use crate::{b::Thing, n::{x::Y, z}};\n// crate::c is a comment\n",
        ),
        ("b.rs", "fn f() { crate::c::g(); }\n"),
        (
            "c.rs",
            "use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }\n",
        ),
        ("n/mod.rs", "pub mod x;\nuse super::a::A;\n"),
        ("n/x.rs", "use super::super::b::B;\n"),
    ]);
    let edges = tree.imports();
    let set = |v: &[&str]| v.iter().map(PathBuf::from).collect::<BTreeSet<_>>();
    assert_eq!(
        edges[Path::new("a.rs")],
        set(&["b.rs", "n/x.rs", "n/mod.rs"])
    );
    assert_eq!(
        edges[Path::new("c.rs")],
        set(&["a.rs"]),
        "comments and tests are not imports"
    );
    assert_eq!(
        edges[Path::new("n/x.rs")],
        set(&["b.rs"]),
        "super::super:: is the root"
    );
    let t = tangles(&edges, 2);
    assert_eq!(
        t,
        vec![set(&["a.rs", "b.rs", "c.rs", "n/mod.rs", "n/x.rs"])]
    );

    let (_d, pair) = scratch(&[("a.rs", "use crate::b;\n"), ("b.rs", "use crate::a;\n")]);
    assert!(
        tangles(&pair.imports(), 2).is_empty(),
        "two files may name each other"
    );
}

#[test]
fn imports_point_down_no_cycle_joins_more_than_two_files() {
    let tree = src_tree();
    assert!(
        tree.files.len() > 30,
        "src/ read: {} files",
        tree.files.len()
    );
    let edges = tree.imports();
    let total: usize = edges.values().map(BTreeSet::len).sum();
    assert!(total > 100, "imports seen in src/: {total}");
    let t = tangles(&edges, 2);
    let show: Vec<String> = t
        .iter()
        .map(|c| {
            let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
            format!("{} files: {}", c.len(), names.join(", "))
        })
        .collect();
    assert!(
        t.is_empty(),
        "import cycles of more than two files (docs/architecture.md says which layer each \
         module is in; move the shared piece down):\n  {}",
        show.join("\n  ")
    );
}

#[test]
fn every_file_has_a_layer_and_imports_point_down() {
    let tree = src_tree();
    let unplaced: Vec<String> = tree
        .files
        .keys()
        .filter(|f| layer_of(f).is_none())
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        unplaced.is_empty(),
        "files in no layer (add them to LAYERS and docs/architecture.md): {unplaced:?}"
    );
    assert_eq!(layer_of(Path::new("notify/config.rs")), Some(4));
    assert_eq!(layer_of(Path::new("notify/mail.rs")), Some(7));
    let mut upward = Vec::new();
    for (from, targets) in tree.imports() {
        let lf = layer_of(&from).unwrap_or(0);
        for to in targets {
            let lt = layer_of(&to).unwrap_or(0);
            if lt > lf {
                upward.push(format!(
                    "{} ({}) imports {} ({})",
                    from.display(),
                    LAYERS[lf].0,
                    to.display(),
                    LAYERS[lt].0
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up a layer:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn the_sql_reader_sees_sql_and_rusqlite() {
    let (_d, tree) = scratch(&[
        ("store/sqlite.rs", "const Q: &str = \"SELECT a FROM t\";\n"),
        ("store/mod.rs", "pub trait Store { fn hosts(&self) -> Vec<String>; }\n"),
        ("x.rs", "fn f(t: &rusqlite::Transaction) {}\n"),
        ("y.rs", "let q = \"select id from runs where x=1\".to_uppercase();\nlet s = \"a FROM b WHERE c\";\n"),
        ("z.rs", "// SELECT * FROM runs\nlet ok = \"from where\";\n"),
    ]);
    let found = sql_outside_store(&tree, STORE_FILES);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("x.rs:1:"), "{found:#?}");
    assert!(found[1].starts_with("y.rs:2:"), "{found:#?}");
}

#[test]
fn all_sql_is_in_the_store() {
    let tree = src_tree();
    let store_text = STORE_FILES
        .iter()
        .map(|f| &tree.files[Path::new(f)])
        .fold(String::new(), |a, t| a + t);
    assert!(
        store_text.contains("\"SELECT ") || store_text.contains("SELECT "),
        "the store files hold the SQL"
    );
    let found = sql_outside_store(&tree, STORE_FILES);
    assert!(
        found.is_empty(),
        "SQL or rusqlite outside the store ({}):\n  {}",
        STORE_FILES.join(", "),
        found.join("\n  ")
    );
}

/// The store's backend modules (relative to `src/`): only `src/store/` may name them.
const STORE_BACKENDS: &[&str] = &["store/sqlite.rs"];

/// Lines of files outside `store/` that name a store backend: its module path (`sqlite::`)
/// or a top-level item its module declares public (`Journal`, `lease_owner` ...), unless a
/// file outside the store declares an item of that name too (the SSH script's `Reader`,
/// the JSON report's `SCHEMA_VERSION`): that name is the other file's.
/// String contents are not read (a message may say "journal").
fn backend_names_outside_store(tree: &Tree, backends: &[&str]) -> Vec<String> {
    let declared = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        for line in code_of(text).lines() {
            let Some(rest) = line.strip_prefix("pub ") else {
                continue;
            };
            for kw in [
                "struct ", "enum ", "trait ", "type ", "fn ", "const ", "static ",
            ] {
                if let Some(r) = rest.strip_prefix(kw) {
                    let end = r.find(|c: char| !is_ident(c)).unwrap_or(r.len());
                    out.push(r[..end].to_string());
                }
            }
        }
        out
    };
    let any_declared = |text: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for line in code_of(text).lines() {
            let line = line.trim_start();
            let rest = ["pub(crate) ", "pub(super) ", "pub "]
                .iter()
                .find_map(|p| line.strip_prefix(p))
                .unwrap_or(line);
            for kw in [
                "struct ", "enum ", "trait ", "type ", "fn ", "const ", "static ",
            ] {
                if let Some(r) = rest.strip_prefix(kw) {
                    let end = r.find(|c: char| !is_ident(c)).unwrap_or(r.len());
                    out.insert(r[..end].to_string());
                }
            }
        }
        out
    };
    let mut words = BTreeSet::new();
    for b in backends {
        let Some(text) = tree.files.get(Path::new(b)) else {
            continue;
        };
        let stem = Path::new(b)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        words.insert(format!("{stem}::"));
        words.extend(declared(text));
    }
    let outside = |rel: &Path| {
        !rel.to_string_lossy()
            .replace('\\', "/")
            .starts_with("store/")
    };
    for (rel, text) in &tree.files {
        if outside(rel) {
            for name in any_declared(text) {
                words.remove(&name);
            }
        }
    }
    let mut found = Vec::new();
    for (rel, text) in &tree.files {
        if !outside(rel) {
            continue;
        }
        let r = rel.to_string_lossy().replace('\\', "/");
        let (blanked, _) = strings_apart(&code_of(text));
        for (n, code) in blanked.lines().enumerate() {
            let whole = |w: &str, at: usize| {
                !code[..at].chars().next_back().is_some_and(is_ident)
                    && (w.ends_with("::")
                        || !code[at + w.len()..].chars().next().is_some_and(is_ident))
            };
            let named: Vec<&str> = words
                .iter()
                .filter(|w| code.match_indices(w.as_str()).any(|(at, _)| whole(w, at)))
                .map(String::as_str)
                .collect();
            if !named.is_empty() {
                found.push(format!(
                    "{r}:{}: {} ({})",
                    n + 1,
                    code.trim(),
                    named.join(", ")
                ));
            }
        }
    }
    found
}

#[test]
fn the_backend_reader_sees_module_paths_and_backend_items() {
    let (_d, tree) = scratch(&[
        (
            "store/sqlite.rs",
            "pub struct Journal;\npub struct Reader;\npub fn lease_owner() {}\n    pub fn open() {}\n",
        ),
        ("store/mod.rs", "pub fn open() -> Arc<dyn Store> { sqlite::Journal::open() }\n"),
        ("a.rs", "use crate::store::sqlite::Reader;\n"),
        ("b.rs", "fn f(j: Journal) {}\nlet s = \"Journal: sqlite::x\";\n"),
        ("c.rs", "struct Reader;\nfn g(r: Reader) { open(); }\nlet o = lease_owner();\n"),
        ("e.rs", "fn k(r: crate::c::Reader) {}\n"),
        ("d.rs", "// Journal\nfn h(j: &dyn Store, my_journal: JournalX) {}\n"),
    ]);
    let found = backend_names_outside_store(&tree, STORE_BACKENDS);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("a.rs:1:"), "{found:#?}");
    assert!(found[1].starts_with("b.rs:1:"), "{found:#?}");
    assert!(found[2].starts_with("c.rs:3:"), "{found:#?}");
}

#[test]
fn only_the_store_names_its_backend() {
    let tree = src_tree();
    for b in STORE_BACKENDS {
        assert!(tree.files.contains_key(Path::new(b)), "backend {b} exists");
    }
    let found = backend_names_outside_store(&tree, STORE_BACKENDS);
    assert!(
        found.is_empty(),
        "a store backend named outside src/store/ (use store::open / store::open_reader and the \
         Store / StoreReader traits):\n  {}",
        found.join("\n  ")
    );
}

/// Where a transport may be named outside `src/transport/`, and why it is not the transport.
const NOT_A_TRANSPORT: &[(&str, &str)] = &[
    // `C:\ProgramData\ssh`, OpenSSH's directory: contain refuses to act in it.
    ("contain/validate.rs", "ssh"),
];

/// What names one transport in source text.
struct TransportWords {
    /// Registered names and the `ansible_connection` values they answer to (as string
    /// literals and, after `transport::`, as module paths).
    names: BTreeSet<String>,
    /// Types declared in a transport's own module (and nowhere else in the tree).
    types: BTreeSet<String>,
}

impl TransportWords {
    /// From the registry (`names`: each transport's name and the values it answers to) and
    /// the tree: the types declared under `transport/NAME/` or in `transport/NAME.rs`.
    fn new(tree: &Tree, names: &[(&str, &[&str])]) -> TransportWords {
        // Module-level declarations only (column 0): an impl's `type Error` declares nothing.
        let declared = |text: &str| -> Vec<String> {
            let mut out = Vec::new();
            for line in code_of(text).lines() {
                let rest = ["pub(crate) ", "pub(super) ", "pub "]
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                    .unwrap_or(line);
                for kw in ["struct ", "enum ", "trait ", "type "] {
                    if let Some(r) = rest.strip_prefix(kw) {
                        let end = r.find(|c: char| !is_ident(c)).unwrap_or(r.len());
                        if r[..end].starts_with(|c: char| c.is_ascii_uppercase()) {
                            out.push(r[..end].to_string());
                        }
                    }
                }
            }
            out
        };
        let own = |rel: &Path| {
            let r = rel.to_string_lossy().replace('\\', "/");
            names.iter().any(|(n, _)| {
                r == format!("transport/{n}.rs") || r.starts_with(&format!("transport/{n}/"))
            })
        };
        let mut inside = BTreeSet::new();
        let mut elsewhere = BTreeSet::new();
        for (rel, text) in &tree.files {
            let set = if own(rel) {
                &mut inside
            } else {
                &mut elsewhere
            };
            set.extend(declared(text));
        }
        TransportWords {
            names: names
                .iter()
                .flat_map(|(n, also)| std::iter::once(*n).chain(also.iter().copied()))
                .map(str::to_ascii_lowercase)
                .collect(),
            types: inside.difference(&elsewhere).cloned().collect(),
        }
    }
}

/// Lines of files outside `transport/` that name a transport: a string literal that is a
/// transport's name (or an `ansible_connection` value), a `transport::NAME` path, a type
/// declared in a transport's module, or an enum variant named after a transport
/// (`::Winrm`). `allowed` lists (file, literal) pairs that are not the transport.
fn transport_names_outside(
    tree: &Tree,
    words: &TransportWords,
    allowed: &[(&str, &str)],
) -> Vec<String> {
    let mut found = Vec::new();
    for (rel, text) in &tree.files {
        let r = rel.to_string_lossy().replace('\\', "/");
        if r.starts_with("transport/") {
            continue;
        }
        let (blanked, literals) = strings_apart(&code_of(text));
        for (n, code) in blanked.lines().enumerate() {
            let mut why = Vec::new();
            for (_, lit) in literals.iter().filter(|(l, _)| *l == n) {
                let low = lit.to_ascii_lowercase();
                if words.names.contains(&low) && !allowed.iter().any(|(f, l)| *f == r && *l == low)
                {
                    why.push(format!("\"{lit}\""));
                }
            }
            let whole = |w: &str, at: usize| {
                !code[..at].chars().next_back().is_some_and(is_ident)
                    && !code[at + w.len()..].chars().next().is_some_and(is_ident)
            };
            let has = |w: &str| code.match_indices(w).any(|(at, _)| whole(w, at));
            for name in &words.names {
                let path = format!("transport::{name}");
                if has(&path) {
                    why.push(path);
                }
            }
            // An enum variant named after a transport: `Type::Winrm` (a type before it, so
            // `chrono::Local` is not one).
            for name in &words.names {
                let mut cap = name.clone();
                cap[..1].make_ascii_uppercase();
                let variant = format!("::{cap}");
                let found = code.match_indices(&variant).any(|(at, _)| {
                    let ty: String = code[..at]
                        .chars()
                        .rev()
                        .take_while(|c| is_ident(*c))
                        .collect();
                    ty.ends_with(|c: char| c.is_ascii_uppercase())
                        && !code[at + variant.len()..]
                            .chars()
                            .next()
                            .is_some_and(is_ident)
                });
                if found {
                    why.push(variant);
                }
            }
            for t in &words.types {
                if has(t) {
                    why.push(t.clone());
                }
            }
            if !why.is_empty() {
                found.push(format!(
                    "{r}:{}: {} in: {}",
                    n + 1,
                    why.join(", "),
                    code.trim()
                ));
            }
        }
    }
    found
}

/// `code` with the contents of its string literals blanked (lines kept), and each literal
/// with the line it starts on.
fn strings_apart(code: &str) -> (String, Vec<(usize, String)>) {
    let mut blanked = String::with_capacity(code.len());
    let mut literals = Vec::new();
    let mut line = 0;
    let mut cur: Option<(usize, String)> = None;
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            blanked.push('\n');
            if let Some((_, s)) = &mut cur {
                s.push('\n');
            }
            continue;
        }
        match &mut cur {
            Some((_, s)) => {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        if next == '\n' {
                            line += 1;
                            blanked.push('\n');
                        }
                        s.push(c);
                        s.push(next);
                    }
                } else if c == '"' {
                    literals.extend(cur.take());
                    blanked.push('"');
                } else {
                    s.push(c);
                }
            }
            None => {
                if c == '"' {
                    cur = Some((line, String::new()));
                }
                blanked.push(c);
            }
        }
    }
    (blanked, literals)
}

/// The registry as the rule reads it: each transport's name and `ansible_connection` values.
fn registry() -> Vec<(&'static str, &'static [&'static str])> {
    pushscan::transport::REGISTRY
        .iter()
        .map(|e| (e.name, e.answers_to))
        .collect()
}

#[test]
fn the_transport_reader_sees_names_paths_types_and_variants() {
    let (_d, tree) = scratch(&[
        (
            "transport/winrm/mod.rs",
            "pub struct WinTarget;\npub enum Kind {}\n",
        ),
        ("transport/mod.rs", "pub struct Shared;\n"),
        (
            "plan.rs",
            "use crate::transport::winrm::WinTarget;\nlet t = \"Winrm\";\n",
        ),
        (
            "sweep.rs",
            "match c { ConnKind::Winrm => 1, ConnKind::Ssh => 2 }\nlet s: Shared = x;\n",
        ),
        ("pipeline.rs", "fn f(t: &WinTarget) {}\n"),
        (
            "ldap.rs",
            "enum Kind {}\nlet w = \"winrm (default)\";\nlet z = Hive::LocalMachine;\n\
             let n = chrono::Local::now();\nlet h = \"<th>WinTarget</th>\";\n",
        ),
        ("validate.rs", "const D: [&str; 1] = [\"ssh\"];\n"),
    ]);
    let words = TransportWords::new(&tree, &[("winrm", &["psrp"]), ("ssh", &[]), ("local", &[])]);
    assert_eq!(
        words.types,
        BTreeSet::from(["WinTarget".to_string()]),
        "a type also declared elsewhere (Kind) is not the transport's"
    );
    let found = transport_names_outside(&tree, &words, &[("validate.rs", "ssh")]);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found[0].starts_with("pipeline.rs:1: WinTarget"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("plan.rs:1: transport::winrm, WinTarget"),
        "{found:#?}"
    );
    assert!(found[2].starts_with("plan.rs:2: \"Winrm\""), "{found:#?}");
    assert!(
        found[3].starts_with("sweep.rs:1: ::Ssh, ::Winrm"),
        "{found:#?}"
    );
}

#[test]
fn no_file_outside_the_transports_names_one() {
    let tree = src_tree();
    let reg = registry();
    assert!(reg.len() >= 3, "registered transports: {reg:?}");
    let words = TransportWords::new(&tree, &reg);
    assert!(
        words.types.len() > 5,
        "types declared in the transport modules: {:?}",
        words.types
    );
    let found = transport_names_outside(&tree, &words, NOT_A_TRANSPORT);
    assert!(
        found.is_empty(),
        "transports named outside src/transport/ (a transport's variables, options, plan \
         line, staging, connection and shell belong in its module; the engine goes through \
         pushscan::transport's registry):\n  {}",
        found.join("\n  ")
    );
}
