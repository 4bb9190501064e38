//! The direction of dependencies between the layers (docs/ARCHITECTURE.md), checked on the
//! source: the file system is touched only by the local storage backend, `policy` and
//! `template` are pure, and nothing below the callback layer reaches up into it. The
//! candle crate reads checkpoint metadata only through the core's types.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every line of the crate's sources under `sub` that contains one of `needles`, outside
/// comments, as `path:line: text`.
fn offending(root: &Path, sub: &str, needles: &[&str], except: &[&str]) -> Vec<String> {
    let base = root.join(sub);
    let mut found = Vec::new();
    for file in sources(&base) {
        let relative = file
            .strip_prefix(root)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        if except.iter().any(|e| relative.starts_with(e)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|n| code.contains(n)) {
                found.push(format!("{relative}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    found
}

fn core() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn only_the_local_backend_touches_the_file_system() {
    let touches = [
        "std::fs",
        "fs::",
        ".is_dir()",
        ".is_file()",
        ".exists()",
        ".canonicalize()",
        "read_dir(",
        "symlink_metadata",
    ];
    let found = offending(&core(), "", &touches, &["store/local/"]);
    assert!(
        found.is_empty(),
        "file-system calls outside store/local/:\n{}",
        found.join("\n")
    );
}

#[test]
fn policy_and_template_are_pure_and_depend_on_nothing_above() {
    let impure = [
        "std::fs",
        "std::io",
        "std::thread",
        "std::time",
        "crate::checkpoint",
        "crate::callback",
        "crate::store",
        "candle",
    ];
    for layer in ["policy", "template"] {
        let found = offending(&core(), layer, &impure, &[]);
        assert!(
            found.is_empty(),
            "{layer} reaches out:\n{}",
            found.join("\n")
        );
    }
    // The store knows nothing of Keras or of callbacks.
    let found = offending(
        &core(),
        "store",
        &["crate::checkpoint", "crate::callback"],
        &[],
    );
    assert!(found.is_empty(), "store reaches up:\n{}", found.join("\n"));
}

/// The source folders of every crate of the workspace, relative to `crates/`.
const CRATES: [&str; 6] = [
    "model-checkpoint/src",
    "model-checkpoint-fit/src",
    "model-checkpoint-candle/src",
    "model-checkpoint-burn/src",
    "model-checkpoint-object-store/src",
    "ckpt/src",
];

#[test]
fn metadata_and_section_keys_are_spelled_only_by_their_owners() {
    // The `__metadata__` keys are `store::Meta`'s (meta.rs), the training state's sections
    // the typed document's (document.rs); everyone else reads them through those types
    // (`CheckpointFile::meta`, `CheckpointFile::training_state`), so that a third adapter
    // needs no string of its own to stay interoperable.
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = [
        "\"training_state\"",
        "\"callbacks\"",
        "\"optimizer\"",
        "\"optimizer/\"",
        "\"loop\"",
        "\"learner\"",
        "get(\"global_step\")",
        "get(\"run_id\")",
        "get(\"epoch\")",
        "get(\"logs\")",
        "get(\"monitor\")",
        "info().get(\"",
        "info()[\"",
        ".get(\"callbacks\")",
    ];
    let mut found = Vec::new();
    for krate in CRATES {
        found.extend(offending(
            &crates,
            krate,
            &keys,
            &[
                "model-checkpoint/src/store/meta.rs",
                "model-checkpoint/src/document.rs",
                // The journal is a CSV document of its own, with its own column names.
                "model-checkpoint/src/checkpoint/engine/journal.rs",
                "ckpt/src/report/",
            ],
        ));
    }
    assert!(
        found.is_empty(),
        "metadata or section keys spelled outside their owner:\n{}",
        found.join("\n")
    );
}

#[test]
fn keras_decisions_touch_no_storage() {
    // The half of ModelCheckpoint the Keras traces check decides only: it reaches neither
    // the saving engine nor storage.
    let found = offending(
        &core(),
        "checkpoint/decisions.rs",
        &[
            "engine",
            "Storage",
            "storage",
            "std::fs",
            "std::io",
            "background",
        ],
        &[],
    );
    assert!(
        found.is_empty(),
        "Keras's decisions reach into saving:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_delete_goes_through_the_gate() {
    // `Storage::delete` is called by the deletion gate alone (and implemented by the
    // backends); everything else deletes through `store::gate`, which checks that the
    // object is what the caller says it is. The other crates are checked too.
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let calls = [
        ".delete(&",
        ".delete(name",
        "storage.delete(",
        "remove_file(",
        "remove_dir(",
    ];
    let mut found = Vec::new();
    for krate in CRATES {
        found.extend(offending(
            &crates,
            krate,
            &calls,
            &[
                "model-checkpoint/src/store/gate.rs",
                // The backends: their own `delete`, and their own temporary files.
                "model-checkpoint/src/store/local/",
                // The object store's `Storage::delete`, the gate's way to the server, is its
                // only raw delete; breaking a lock (`lock.rs`), releasing one's own lock or
                // claim, everything else there goes through the gate and is checked here.
                "model-checkpoint-object-store/src/lib.rs",
                // The benchmarks remove the scratch files they made themselves.
                "ckpt/src/bench/",
            ],
        ));
    }
    assert!(
        found.is_empty(),
        "deletes that bypass store::gate:\n{}",
        found.join("\n")
    );
}

/// The names that follow `prefix` in `code`: `prefix::a` gives `a`, `prefix::{a, b::c}`
/// gives `a` and `b`.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |t: &str| -> String {
        t.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        // `xsuper::` or `a::super::` is not this prefix.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            out.extend(list[..end].split(',').map(ident));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// The modules of the folder `dir` (module path `path` in the crate, empty at `src/`), with
/// the sibling modules each one's code names (`crate::path::x`, or `super::x` from a
/// child), outside comments. A folder's own `mod.rs` (or `lib.rs`) is the parent, not a
/// sibling.
fn module_graph(
    dir: &Path,
    path: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut modules: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            let name = path.file_stem()?.to_string_lossy().into_owned();
            (path.is_dir() || path.extension().is_some_and(|x| x == "rs"))
                .then_some(name)
                .filter(|n| !matches!(n.as_str(), "lib" | "main" | "mod" | "tests"))
        })
        .collect();
    modules.sort();
    modules.dedup();
    let absolute = if path.is_empty() {
        "crate::".to_owned()
    } else {
        format!("crate::{path}::")
    };
    let mut graph = std::collections::BTreeMap::new();
    for module in &modules {
        let sub = dir.join(module);
        let files = if sub.is_dir() {
            sources(&sub)
        } else {
            vec![dir.join(format!("{module}.rs"))]
        };
        let mut uses = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ");
            // `super::` names a sibling only from the module's own file (or its folder's
            // `mod.rs`); deeper files' `super::` is their own folder.
            let direct = file == dir.join(format!("{module}.rs")) || file == sub.join("mod.rs");
            let mut named = names_after(&code, &absolute);
            if direct && !path.is_empty() {
                named.extend(names_after(&code, "super::"));
            }
            if direct && path.is_empty() {
                // At the top, `super::` is not used for siblings; `crate::x` is.
            }
            for other in named {
                if &other != module && modules.contains(&other) {
                    uses.insert(other);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle in `graph`, as the modules along it.
fn cycle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_circles_between_modules() {
    // The modules of each folder of the core and of fit name each other one way only, at
    // the top (`lib.rs`'s modules) and inside every folder (the engine's `commit` and
    // `sharded`, the store's parts, ...). The one error type every module returns
    // (`error.rs`) is left out: it names the types it reports.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for krate in ["model-checkpoint/src", "model-checkpoint-fit/src"] {
        let src = root.join(krate);
        let mut folders = vec![(src.clone(), String::new())];
        while let Some((dir, path)) = folders.pop() {
            let mut graph = module_graph(&dir, &path);
            graph.remove("error");
            for uses in graph.values_mut() {
                uses.remove("error");
            }
            assert!(
                cycle(&graph).is_none(),
                "{krate}/{path}: modules in a circle: {:?}\n{graph:#?}",
                cycle(&graph)
            );
            checked += 1;
            for entry in std::fs::read_dir(&dir).expect("list") {
                let sub = entry.expect("entry").path();
                if sub.is_dir() {
                    let name = sub
                        .file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned();
                    let inner = if path.is_empty() {
                        name
                    } else {
                        format!("{path}::{name}")
                    };
                    folders.push((sub, inner));
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} folders checked");
}

#[test]
fn module_graph_sees_the_forms_modules_are_named_in() {
    // The circle check is only as good as what it reads.
    assert_eq!(names_after("use super::{a, b::c};", "super::"), ["a", "b"]);
    assert_eq!(names_after("x(super::a::f()) ", "super::"), ["a"]);
    assert!(names_after("use super::super::a;", "super::").contains(&"super".to_owned()));
    assert!(names_after("self::xsuper::a", "super::").is_empty());
    assert_eq!(
        names_after("crate::store::gate::x", "crate::store::"),
        ["gate"]
    );
}

#[test]
fn the_engine_configuration_is_written_only_by_the_builder() {
    // `Config` is what `ModelCheckpoint`'s builder decided; the engine reads it and keeps
    // its running state apart.
    let found = offending(
        &core(),
        "",
        &["config.", "configure"],
        // The builder's methods: `options.rs`, and the Keras arguments' in `mod.rs`.
        &[
            "checkpoint/model_checkpoint/options.rs",
            "checkpoint/model_checkpoint/mod.rs",
        ],
    )
    .into_iter()
    .filter(|l| {
        let code = l.split_once(": ").map_or(l.as_str(), |(_, c)| c);
        code.split("config.").skip(1).any(|after| {
            let rest: String = after
                .chars()
                .skip_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let rest = rest.trim_start();
            (rest.starts_with('=') && !rest.starts_with("==")) || rest.starts_with("+=")
        })
    })
    .collect::<Vec<_>>();
    assert!(
        found.is_empty(),
        "the engine's configuration written outside the builder:\n{}",
        found.join("\n")
    );
}

#[test]
fn keras_texts_are_spelled_only_by_the_keras_rules() {
    // Every text Keras prints, warns or (for Keras 3) raises lives in `checkpoint/keras/`,
    // so that each Keras is one module there.
    let texts = [
        "saving model to",
        "did not improve from",
        "improved from",
        "Can save best model only",
        "fallback to auto mode",
        // Keras 3 only.
        "finished saving model to",
        "isn't able to automatically determine",
        "got an unexpected keyword argument",
        "Expected save_freq are 'epoch'",
        "must end in `.weights.h5`",
        "(Keras model format)",
        "object is not callable",
        "must be a mapping, not NoneType",
        "is not iterable",
    ];
    let found = offending(&core(), "", &texts, &["checkpoint/keras/"]);
    assert!(
        found.is_empty(),
        "Keras texts outside checkpoint/keras/:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_name_type_parses_urls() {
    // `scheme://root` is parsed in one place, `name.rs`; what a scheme means belongs to a
    // storage (the local folder refuses every URL) or to Keras (tf.keras makes no folders
    // under `gs://`), never to the engine, the store's formats or the callbacks.
    let found = offending(
        &core(),
        "",
        &[
            ".scheme()",
            "\"s3",
            "\"gs",
            "\"az",
            "\"http",
            "split_once(\":",
        ],
        &["name.rs", "checkpoint/keras/", "store/local/"],
    );
    assert!(
        found.is_empty(),
        "schemes outside the name type:\n{}",
        found.join("\n")
    );
}
