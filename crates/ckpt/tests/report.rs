//! `ckpt report`: the page of a real training run opens in a headless browser (Debian's
//! `chromium`) without console errors, with one curve per metric, as many checkpoint
//! markers as saves, the best one marked, a damaged file as damaged and deleted ones as
//! deleted; a screenshot is kept under `target/`; a 10,000-epoch history's render time is
//! printed. Skips with a message where no browser is found (`$CKPT_CHROMIUM`, `chromium`),
//! except in CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ckpt, ckpt_within, text};

fn browser() -> Option<String> {
    let candidates = std::env::var("CKPT_CHROMIUM")
        .map(|c| vec![c])
        .unwrap_or_else(|_| vec!["chromium".into(), "chromium-browser".into()]);
    for c in &candidates {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c.clone());
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no chromium in CI; .ci/run installs Debian's"
    );
    println!(
        "SKIPPED browser test: no chromium found (apt-get install chromium, or set CKPT_CHROMIUM)"
    );
    None
}

/// The page's DOM once loaded and its scripts run, the browser's log, and the wall time.
fn load(browser: &str, page: &Path, screenshot: Option<&Path>) -> (String, String, f64) {
    let url = format!("file://{}", page.display());
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--window-size=1200,1500",
    ]);
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let started = Instant::now();
    let out = cmd.arg(&url).output().expect("run the browser");
    let seconds = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr), seconds)
}

/// The value of `attr="…"` on the `<body>` element.
fn body_attr(dom: &str, attr: &str) -> Option<String> {
    let body = &dom[dom.find("<body")?..];
    let body = &body[..body.find('>')?];
    let start = body.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(body[start..start + body[start..].find('"')?].to_owned())
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

/// Console errors in the browser's log: uncaught exceptions and `console.error`.
fn console_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains(":ERROR:")))
        .collect()
}

fn artefacts() -> PathBuf {
    // target/tmp is CARGO_TARGET_TMPDIR; the screenshots go beside it, under target/.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("report");
    std::fs::create_dir_all(&dir).expect("artefact folder");
    dir
}

#[test]
fn the_report_of_a_real_run_shows_every_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ckpt(
        dir.path(),
        &[
            "train",
            "--epochs",
            "8",
            "--keep-last",
            "3",
            "--progress",
            "0",
            "--verbose",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Damage one of the three kept files in the middle of its bytes.
    let kept = dir.path().join("checkpoints/digits.07-0.9167.safetensors");
    let mut bytes = std::fs::read(&kept).expect("kept file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&kept, bytes).expect("damage");
    // And delete another by hand.
    std::fs::remove_file(dir.path().join("checkpoints/digits.06-0.9111.safetensors"))
        .expect("delete by hand");

    let out = ckpt(dir.path(), &["report", "checkpoints", "-o", "report.html"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("4 metric(s) over 8 epoch(s), 8 checkpoint(s) saved (1 there and verified)"),
        "{}",
        text(&out.stdout)
    );
    let page = dir.path().join("report.html");
    let html = std::fs::read_to_string(&page).expect("page");
    // Self-contained: nothing fetched from anywhere.
    for external in ["http://", "https://", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(external), "the page refers to {external}");
    }

    // The same as a picture, drawn with plotters.
    let out = ckpt(
        dir.path(),
        &["report", "checkpoints", "--svg", "report.svg"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("val_accuracy"),
        "{svg:.200}"
    );
    assert_eq!(count(&svg, "<circle"), 8, "a marker per save");

    let Some(browser) = browser() else { return };
    let (dom, log, _) = load(&browser, &page, None);
    assert_eq!(
        body_attr(&dom, "data-ready").as_deref(),
        Some("1"),
        "the page's script ran"
    );
    assert_eq!(body_attr(&dom, "data-errors").as_deref(), Some("0"));
    assert!(
        console_errors(&log).is_empty(),
        "{:?}",
        console_errors(&log)
    );
    // One curve per logged metric, a marker per save, the best one marked.
    assert_eq!(
        count(&dom, "<polyline class=\"curve"),
        4,
        "loss, accuracy and their val_"
    );
    for metric in [
        "\"loss\"",
        "\"val_loss\"",
        "\"accuracy\"",
        "\"val_accuracy\"",
    ] {
        assert!(dom.contains(&format!("data-metric={metric}")), "{metric}");
    }
    assert_eq!(count(&dom, "<a href=\"#ckpt-"), 8, "a marker per save");
    assert_eq!(
        count(&dom, "class=\"marker deleted"),
        6,
        "retention deleted five, and one by hand"
    );
    assert!(dom.contains("(deleted, not by the run)"));
    assert_eq!(count(&dom, "class=\"marker damaged"), 1);
    assert_eq!(count(&dom, " best"), 2, "the best marker and its badge");
    assert!(
        dom.contains("class=\"marker kept best latest\""),
        "the newest is the best here"
    );
    let table = &dom[dom.find("id=\"checkpoints\"").expect("the table")..];
    let damaged_row = table
        .split("<tr ")
        .find(|r| r.contains("digits.07-0.9167"))
        .expect("row of the damaged file");
    assert!(
        damaged_row.contains("b-damaged") && damaged_row.contains("no: "),
        "{damaged_row}"
    );

    let shot = artefacts().join("report.png");
    let _ = std::fs::remove_file(&shot);
    load(&browser, &page, Some(&shot));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot"
    );
    println!("screenshot: {}", shot.display());
}

#[test]
fn a_ten_thousand_epoch_history_renders_quickly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("run");
    std::fs::create_dir(&folder).expect("folder");
    let mut history = String::from("epoch,accuracy,loss,val_accuracy,val_loss\r\n");
    let mut journal =
        String::from("seq,event,epoch,batch,global_step,kind,path,monitor,value,run_id\r\n");
    for e in 0..10_000u32 {
        let t = f64::from(e) / 10_000.0;
        let loss = 2.0 * (-5.0 * t).exp() + 0.05 * (f64::from(e) * 0.7).sin().abs();
        let _ = std::fmt::Write::write_fmt(
            &mut history,
            format_args!(
                "{e},{},{loss},{},{}\r\n",
                1.0 - loss / 3.0,
                1.0 - loss / 2.5,
                loss * 1.1
            ),
        );
        if e % 100 == 99 {
            let _ = std::fmt::Write::write_fmt(
                &mut journal,
                format_args!(
                    "{},saved,{},,{},full,run/w.{:05}.safetensors,val_loss,{},ab\r\n",
                    e / 100,
                    e + 1,
                    (e + 1) * 45,
                    e + 1,
                    loss * 1.1
                ),
            );
        }
    }
    std::fs::write(folder.join("history.csv"), history).expect("history");
    std::fs::write(folder.join(".ckpt-run.journal.csv"), journal).expect("journal");
    let started = Instant::now();
    let out = ckpt(dir.path(), &["report", "run", "-o", "big.html"]);
    let written = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = dir.path().join("big.html");
    let size = std::fs::metadata(&page).expect("page").len();

    let Some(browser) = browser() else { return };
    let (dom, log, wall) = load(&browser, &page, None);
    assert_eq!(body_attr(&dom, "data-ready").as_deref(), Some("1"));
    assert_eq!(body_attr(&dom, "data-errors").as_deref(), Some("0"));
    assert!(
        console_errors(&log).is_empty(),
        "{:?}",
        console_errors(&log)
    );
    assert_eq!(count(&dom, "<a href=\"#ckpt-"), 100);
    let render_ms = body_attr(&dom, "data-render-ms").unwrap_or_default();
    println!(
        "10,000 epochs: ckpt report {written:.2} s, page {} KiB; headless chromium: page loaded and rendered {render_ms} ms after navigation began ({wall:.2} s with the browser's start)",
        size / 1024
    );
}

#[test]
fn hostile_histories_and_journals_are_drawn_or_refused_by_name() {
    let journal_header = "seq,event,epoch,batch,global_step,kind,path,monitor,value,run_id\n";
    // (history, journal, Some(what the refusal names) or None when the report is drawn)
    let cases: Vec<(String, Option<String>, Option<&str>)> = vec![
        // The last epoch the core's counters allow: one more epoch does not change it in
        // f64, which once left the axis's tick loop stepping forever.
        ("epoch,loss\n9007199254740991,0.5\n".into(), None, None),
        // Values whose range overflows f64: once a range of infinity, and plotters spun.
        (
            "epoch,loss\n0,1e308\n1,-1e308\n2,1.7e308\n".into(),
            None,
            None,
        ),
        // The largest values drawn, at both ends.
        ("epoch,loss\n0,1e300\n1,-1e300\n".into(), None, None),
        // The same large value on both ends: a range of zero width.
        ("epoch,loss\n0,1e299\n1,1e299\n".into(), None, None),
        ("epoch,loss\ninf,0.5\n".into(), None, Some("epoch inf")),
        ("epoch,loss\n1e300,0.5\n".into(), None, Some("epoch 1e300")),
        ("epoch,loss\n-3,0.5\n".into(), None, Some("epoch -3")),
        (
            format!(
                "epoch,{}\n",
                (0..300).map(|i| format!("m{i}")).collect::<Vec<_>>().join(",")
            ),
            None,
            Some("300 metric columns"),
        ),
        (
            "epoch,loss\n0,0.5\n".into(),
            Some(format!(
                "{journal_header}0,saved,18446744073709551615,,,full,run/w.safetensors,loss,0.5,ab\n"
            )),
            Some("epoch 18446744073709551615"),
        ),
        (
            "epoch,loss\n0,0.5\n".into(),
            Some(format!(
                "{journal_header}0,saved,1,,,full,run/w.safetensors,loss,1e308,ab\n"
            )),
            None,
        ),
        // Past the limits: rows, a row's length (in the history, in its header, in the
        // journal); each refused before it is held whole.
        (
            format!("epoch,loss\n{}", "0,1\n".repeat(1_000_001)),
            None,
            Some("more than 1000000 rows"),
        ),
        (
            format!("epoch,loss\n0,{}\n", "1".repeat(3 << 20)),
            None,
            Some("history.csv: a row longer than 1048576 bytes at byte 11"),
        ),
        (
            format!("epoch,loss\n0,{}\n", "1".repeat((1 << 20) + 100)),
            None,
            Some("a row longer than 1048576 bytes"),
        ),
        (
            format!("epoch,{}\n0,1\n", "l".repeat(3 << 20)),
            None,
            Some("a row longer than 1048576 bytes at byte 0"),
        ),
        (
            "epoch,loss\n0,0.5\n".into(),
            Some(format!(
                "{journal_header}0,saved,1,,,full,run/{}.safetensors,loss,1,ab\n",
                "w".repeat(2 << 20)
            )),
            Some(".ckpt-run.journal.csv: a row longer than 1048576 bytes"),
        ),
    ];
    for (history, journal, refusal) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("run");
        std::fs::create_dir(&folder).expect("folder");
        std::fs::write(folder.join("history.csv"), &history).expect("history");
        if let Some(journal) = &journal {
            std::fs::write(folder.join(".ckpt-run.journal.csv"), journal).expect("journal");
        }
        let case = format!("{:.80} / {journal:.100?}", history);
        for (args, output) in [
            (["report", "run", "-o", "r.html"], "r.html"),
            (["report", "run", "--svg", "r.svg"], "r.svg"),
        ] {
            // A hang fails the test (the process is killed by id) instead of stalling it.
            let out = ckpt_within(dir.path(), &args, Duration::from_secs(60));
            let (code, stderr) = (out.status.code(), text(&out.stderr));
            let written = dir.path().join(output);
            match refusal {
                None => {
                    assert_eq!(code, Some(0), "{case}: {stderr}");
                    let text = std::fs::read_to_string(&written).expect("written");
                    assert!(!text.contains("NaN") && !text.contains("\"inf"), "{case}");
                }
                Some(named) => {
                    assert_eq!(code, Some(2), "{case}: {stderr}");
                    assert!(stderr.contains(named), "{case}: {stderr}");
                    assert!(!written.exists(), "{case}");
                }
            }
        }
    }
}

#[test]
fn the_output_is_never_an_input_and_replaces_only_a_page_ckpt_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let folder = d.join("run");
    std::fs::create_dir(&folder).expect("folder");
    let history = "epoch,loss\n0,0.5\n1,0.25\n";
    std::fs::write(folder.join("history.csv"), history).expect("history");
    let journal = "seq,event,epoch,batch,global_step,kind,path,monitor,value,run_id\r\n";
    std::fs::write(folder.join(".ckpt-run.journal.csv"), journal).expect("journal");
    // A file the report lists (it reads every file in the folder), a page, an SVG.
    let not_a_report = b"<!doctype html><p>starts like a page, but is a file the report reads";
    std::fs::write(folder.join("w.safetensors"), not_a_report).expect("file");
    std::os::unix::fs::symlink(folder.join("history.csv"), d.join("link.csv")).expect("link");
    let snapshot = |p: &Path| std::fs::read(p).expect("read");
    let inputs = [
        ("run/history.csv", "run/history.csv"),
        ("./run/../run//history.csv", "run/history.csv"),
        ("link.csv", "run/history.csv"),
        ("run/.ckpt-run.journal.csv", "run/.ckpt-run.journal.csv"),
        ("run/w.safetensors", "run/w.safetensors"),
        ("run", "the checkpoint folder run"),
        ("run/.ckpt.lock", "a name the folder run reserves"),
    ];
    let absolute = folder.join("history.csv");
    let absolute = absolute.to_string_lossy();
    let inputs = inputs
        .iter()
        .map(|(o, w)| ((*o).to_owned(), (*w).to_owned()))
        .chain([(absolute.clone().into_owned(), "run/history.csv".to_owned())]);
    for (target, what) in inputs {
        for flag in ["-o", "--svg"] {
            let out = ckpt(d, &["report", "run", flag, &target]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{flag} {target}: {err}");
            assert_eq!(err.lines().count(), 1, "{err:?}");
            assert!(
                err.contains(&format!(
                    "refusing to write {target}: it is {what}, which this report reads"
                )),
                "{flag} {target}: {err}"
            );
        }
    }
    assert_eq!(snapshot(&folder.join("history.csv")), history.as_bytes());
    assert_eq!(
        snapshot(&folder.join(".ckpt-run.journal.csv")),
        journal.as_bytes()
    );
    assert_eq!(snapshot(&folder.join("w.safetensors")), not_a_report);
    assert!(!folder.join(".ckpt.lock").exists());

    // A user's page and a user's SVG, which merely start like what ckpt writes: kept.
    let users_page = b"<!doctype html>\n<title>my notes</title><p>not a report</p>\n";
    let users_svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- mine --></svg>\n";
    std::fs::write(d.join("mine.html"), users_page).expect("page");
    std::fs::write(d.join("mine.svg"), users_svg).expect("svg");
    for (flag, target, bytes) in [
        ("-o", "mine.html", &users_page[..]),
        ("--svg", "mine.svg", &users_svg[..]),
        ("-o", "mine.svg", &users_svg[..]),
    ] {
        let out = ckpt(d, &["report", "run", flag, target]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {err}");
        assert!(
            err.contains(&format!(
                "refusing to delete or replace {target}: it is not a page or picture ckpt wrote"
            )),
            "{err}"
        );
        assert_eq!(snapshot(&d.join(target)), bytes, "{target} changed");
    }

    // Pages and pictures ckpt wrote are replaced, by either kind, again and again.
    for args in [
        &["report", "run", "-o", "out"][..],
        &["report", "run", "-o", "out"],
        &["report", "run", "--svg", "out"],
        &["report", "run", "--svg", "out"],
        &["report", "run", "-o", "out"],
    ] {
        let out = ckpt(d, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    // Once edited by hand it is no longer ckpt's: refused, the edit kept.
    let mut edited = snapshot(&d.join("out"));
    let at = edited.len() / 2;
    edited[at] = b'#';
    std::fs::write(d.join("out"), &edited).expect("edit");
    let out = ckpt(d, &["report", "run", "-o", "out"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(or it was edited since)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(&d.join("out")), edited);
}

/// The characters a page or an SVG may not carry raw: control characters but tab and line
/// feed, the non-characters XML forbids, and a right-to-left override.
fn raw_forbidden(s: &str) -> Vec<char> {
    s.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{fffe}' | '\u{ffff}' | '\u{202e}')
        })
        .collect()
}

/// Every `<svg …>…</svg>` element of the page (none nests another).
fn inline_svgs(page: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("a closed svg") + start + "</svg>".len();
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

#[test]
fn pages_and_pictures_are_well_formed_whatever_the_text() {
    // The parser is a real one: it refuses what XML 1.0 refuses.
    assert!(roxmltree::Document::parse("<svg>\u{1b}</svg>").is_err());
    assert!(roxmltree::Document::parse("<svg>&#27;</svg>").is_err());
    assert!(roxmltree::Document::parse("<svg a=\"<\"/>").is_err());

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // File names from a template with markup, quotes, escapes and a C1 control; the
    // options table shows the template.
    let template = "run/w<&\"'\u{1b}[2J\u{9b}\u{202e}>{epoch:02d}.safetensors";
    let out = ckpt_within(
        d,
        &[
            "train",
            "--epochs",
            "2",
            "--progress",
            "0",
            "--verbose",
            "0",
            "--filepath",
            template,
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = d.join("run");
    // Metric names with markup, a closing tag and a script, control characters, a
    // non-character, a CDATA end, and bytes that are not UTF-8.
    let injected = "</svg></section><script>document.body.dataset.injected=1</script>";
    let mut history = Vec::new();
    history.extend_from_slice(b"epoch,loss,\"val_<&\"\"'\x1b[2J\r\n>\",acc\xff\xfe\x01x,");
    history.extend_from_slice(injected.as_bytes());
    history.extend_from_slice("]]>\u{fffe}\u{ffff}\u{202e},val_loss\r\n".as_bytes());
    for e in 0..3 {
        history.extend_from_slice(format!("{e},0.{e}5,0.4,1,2,3,0.3\r\n").as_bytes());
    }
    history.extend_from_slice(b"3,\xff,0.2,\x1b,1,1,0.2\r\n");
    std::fs::write(run.join("history.csv"), &history).expect("history");
    // Journal rows with the same in every field.
    let mut journal = std::fs::read(run.join(".ckpt-run.journal.csv")).expect("journal");
    journal.extend_from_slice(
        b"7,saved,3,,,<b>&\"\x1b,\"run/<&\"\"'\x1b\r\n>\xff.safetensors\",\"val_<&\"\"'\x1b[2J\r\n>\",0.35,ab\r\n",
    );
    journal.extend_from_slice(
        "8,saved,4,2,,full,run/x.safetensors,</title><script>x</script>\u{9b},0.1,\u{1b}\r\n"
            .as_bytes(),
    );
    std::fs::write(run.join(".ckpt-run.journal.csv"), &journal).expect("journal");

    let monitor = "val_<&\"'\u{1b}[2J\r\n>";
    for args in [
        vec!["report", "run", "-o", "page.html"],
        vec!["report", "run", "-o", "page.html", "--monitor", monitor],
        vec!["report", "run", "--svg", "picture.svg"],
        vec![
            "report",
            "run",
            "--svg",
            "picture.svg",
            "--monitor",
            monitor,
        ],
    ] {
        let out = ckpt_within(d, &args, Duration::from_secs(60));
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let written = std::fs::read(d.join(args[3])).expect("written");
        let written = String::from_utf8(written).expect("UTF-8");
        assert!(
            raw_forbidden(&written).is_empty(),
            "{args:?}: {:?}",
            raw_forbidden(&written)
        );
        let svgs = if args[2] == "--svg" {
            vec![written.as_str()]
        } else {
            assert_eq!(written.matches("<script").count(), 2, "only the page's own");
            assert!(
                written.contains("val_&lt;&amp;&quot;&#39;\\u{1b}[2J\\r\\n&gt;"),
                "the metric's name, escaped"
            );
            let svgs = inline_svgs(&written);
            assert!(svgs.len() > 3, "{args:?}: a chart and legends per family");
            svgs
        };
        for svg in svgs {
            if let Err(e) = roxmltree::Document::parse(svg) {
                panic!("{args:?}: not well-formed XML: {e}\n{svg:.2000}");
            }
        }
    }

    let Some(browser) = browser() else { return };
    let (dom, log, _) = load(&browser, &d.join("page.html"), None);
    assert_eq!(body_attr(&dom, "data-ready").as_deref(), Some("1"));
    assert_eq!(body_attr(&dom, "data-errors").as_deref(), Some("0"));
    assert!(
        body_attr(&dom, "data-injected").is_none(),
        "a name ran as a script"
    );
    assert!(
        console_errors(&log).is_empty(),
        "{:?}",
        console_errors(&log)
    );
}

/// The rows of the page's checkpoint table, each as its HTML.
fn table_rows(page: &str) -> Vec<String> {
    let table = &page[page.find("id=\"checkpoints\"").expect("the table")..];
    let table = &table[..table.find("</tbody>").expect("the table's end")];
    table
        .split("<tr id=\"ckpt-")
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// The file a table row names (as the page spells it).
fn row_file(row: &str) -> String {
    let start = row.find("<a href=\"#point-").expect("link");
    let start = start + row[start..].find('>').expect("link text") + 1;
    row[start..start + row[start..].find("</a>").expect("link end")].to_owned()
}

/// `ckpt train` quietly, with `extra`.
fn train(dir: &Path, extra: &[&str]) {
    let mut args = vec!["train", "--progress", "0", "--verbose", "0"];
    args.extend_from_slice(extra);
    let out = ckpt_within(dir, &args, Duration::from_secs(120));
    assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
}

#[test]
fn badges_follow_the_files_there_not_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    train(d, &["--epochs", "5", "--keep-last", "2"]);
    let folder = d.join("checkpoints");
    let journal_path = folder.join(".ckpt-run.journal.csv");
    let journal = std::fs::read_to_string(&journal_path).expect("journal");
    let lines: Vec<&str> = journal.lines().collect();
    let run_id = lines[1].rsplit(',').next().expect("run id").to_owned();
    let newest_row = lines
        .iter()
        .rev()
        .find(|l| l.contains(",saved,"))
        .expect("a save");
    let newest_path = newest_row.split(',').nth(6).expect("path").to_owned();
    let first_path = lines[1].split(',').nth(6).expect("path").to_owned();
    // An edited journal: the first save (deleted by retention) claims the best value ever;
    // a row claims the newest file is a save of another run at epoch 9 with a better
    // value still; another claims a save that never happened; the deletion rows are gone.
    let mut edited: Vec<String> = vec![lines[0].to_owned()];
    for line in &lines[1..] {
        if line.contains(",deleted,") {
            continue;
        }
        let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
        if fields[6] == first_path {
            fields[8] = "99".to_owned();
        }
        edited.push(fields.join(","));
    }
    edited.push(format!(
        "50,saved,9,,999,full,{newest_path},val_accuracy,100,{}",
        "f".repeat(32)
    ));
    edited.push(format!(
        "51,saved,10,,1000,full,checkpoints/never.safetensors,val_accuracy,1000,{run_id}"
    ));
    std::fs::write(&journal_path, edited.join("\r\n") + "\r\n").expect("edit");

    let out = ckpt(d, &["report", "checkpoints", "-o", "r.html"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(d.join("r.html")).expect("page");
    let rows = table_rows(&page);
    let best: Vec<&String> = rows.iter().filter(|r| r.contains("b-best")).collect();
    let latest: Vec<&String> = rows.iter().filter(|r| r.contains("b-latest")).collect();
    assert_eq!((best.len(), latest.len()), (1, 1), "{rows:#?}");
    // They are files there that verify, as ckpt best and the order of ckpt ls say.
    let said_best = text(&ckpt(d, &["best", "checkpoints"]).stdout);
    assert_eq!(row_file(best[0]), said_best.trim());
    assert!(best[0].contains("b-kept") && latest[0].contains("b-kept"));
    let ls: serde_json::Value =
        serde_json::from_slice(&ckpt(d, &["ls", "--json", "checkpoints"]).stdout).expect("ls");
    let newest_file = ls
        .as_array()
        .expect("rows")
        .iter()
        .rev()
        .find(|r| r["verified"] == true)
        .expect("a file that verifies")["path"]
        .as_str()
        .expect("path")
        .to_owned();
    assert_eq!(row_file(latest[0]), newest_file);
    // The claims: the deleted save is not there (not kept, not best), the forged row for the
    // newest file is not that file, and the save that never happened is not there.
    assert_eq!(rows.iter().filter(|r| r.contains(">9</td>")).count(), 1);
    for row in &rows {
        let file = row_file(row);
        let kept = row.contains("b-kept");
        if file == first_path || file.ends_with("never.safetensors") {
            assert!(!kept && !row.contains("b-best"), "{row}");
        }
        if row.contains(">9</td>") {
            assert!(row.contains("b-replaced") && !kept, "the forged row: {row}");
        }
    }
    let kept = rows.iter().filter(|r| r.contains("b-kept")).count();
    assert_eq!(
        kept,
        ls.as_array().expect("rows").len(),
        "one kept row per file"
    );
}

#[test]
fn runs_in_one_folder_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Two fresh runs in one folder, the second writing over the first one's first two
    // names (same seed, same values); each numbers its saves from 0.
    train(d, &["--epochs", "3"]);
    train(d, &["--epochs", "2"]);
    let run_of = |file: &str| -> String {
        let out = ckpt(d, &["show", "--json", file]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["metadata"]["run_id"]
            .as_str()
            .expect("run id")
            .to_owned()
    };
    let files: Vec<String> = ["01-0.6472", "02-0.8333", "03-0.8750"]
        .iter()
        .map(|n| format!("checkpoints/digits.{n}.safetensors"))
        .collect();
    let (first, second) = (run_of(&files[2]), run_of(&files[0]));
    assert_ne!(first, second);
    assert_eq!(run_of(&files[1]), second);

    let out = ckpt(d, &["report", "checkpoints", "-o", "r.html"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("5 checkpoint(s) saved (3 there and verified), 2 runs"),
        "{}",
        text(&out.stdout)
    );
    let page = std::fs::read_to_string(d.join("r.html")).expect("page");
    assert!(page.contains("data-runs=\"2\""));
    let rows = table_rows(&page);
    assert_eq!(rows.len(), 5, "every save once: {rows:#?}");
    let run_cell = |row: &str, id: &str| row.contains(&format!("title=\"run id {id}\""));
    // The first run: two saves written over by the second, then its third, there; the
    // newest file (epoch 3) is the first run's, so the second run's saves are marked.
    let (a, b): (Vec<&String>, Vec<&String>) = rows.iter().partition(|r| run_cell(r, &first));
    assert_eq!((a.len(), b.len()), (3, 2), "{rows:#?}");
    assert!(b.iter().all(|r| run_cell(r, &second)));
    for row in &a[..2] {
        assert!(
            row.contains("b-replaced") && row.contains("saved over by a later save of run 2"),
            "{row}"
        );
    }
    assert!(a[2].contains("b-kept") && a[2].contains("b-latest") && !a[2].contains("other-run"));
    for row in &b {
        assert!(row.contains("b-kept") && row.contains("b-other"), "{row}");
    }
    assert_eq!(page.matches("b-best\"").count(), 1);
}

/// Runs `ckpt args` in `dir` with its address space capped at `limit` bytes (through
/// util-linux's `prlimit`, when there is one) and returns its output and its peak resident
/// memory (`VmHWM`, polled from `/proc` while it runs).
fn ckpt_bounded(dir: &Path, args: &[&str], limit: u64) -> (std::process::Output, u64) {
    use std::io::Read as _;
    let prlimit = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if prlimit {
        let mut cmd = Command::new("prlimit");
        // prlimit sets the limit on itself, then runs ckpt in its place (same process).
        cmd.arg(format!("--as={limit}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ckpt"));
        cmd
    } else {
        println!("no prlimit: the address space is not capped, only measured");
        Command::new(env!("CARGO_BIN_EXE_ckpt"))
    };
    let mut child = cmd
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let started = Instant::now();
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "ckpt {args:?} hung"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_end(&mut stderr)
        .expect("read");
    (
        std::process::Output {
            status,
            stdout,
            stderr,
        },
        peak_kib << 10,
    )
}

/// The page bound the README and `ckpt report --help` state.
const PAGE_BOUND: u64 = 16 << 20;
/// The address space a report may use, whatever its input within the limits.
const MEMORY_BOUND: u64 = 256 << 20;

#[test]
fn a_history_at_the_limits_keeps_memory_and_page_bounded() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = d.join("run");
    std::fs::create_dir(&run).expect("folder");
    // 1,000,000 epochs of 8 metrics (about 110 MB), one spike that must stay visible, and
    // a journal of 100,000 saves, most since deleted.
    let mut history =
        std::io::BufWriter::new(std::fs::File::create(run.join("history.csv")).expect("history"));
    writeln!(
        history,
        "epoch,loss,accuracy,val_loss,val_accuracy,lr,m1,m2,m3\r"
    )
    .expect("write");
    for e in 0..1_000_000u32 {
        let t = f64::from(e) / 1e6;
        let loss = if e == 123_457 {
            50.0
        } else {
            2.0 * (-5.0 * t).exp() + 0.05 * (f64::from(e) * 0.7).sin().abs()
        };
        writeln!(
            history,
            "{e},{loss},{},{},{},0.001,{t},{},{}\r",
            1.0 - loss / 3.0,
            loss * 1.1,
            1.0 - loss / 2.5,
            -t,
            e % 7
        )
        .expect("write");
    }
    history.flush().expect("flush");
    let mut journal = std::io::BufWriter::new(
        std::fs::File::create(run.join(".ckpt-run.journal.csv")).expect("journal"),
    );
    writeln!(
        journal,
        "seq,event,epoch,batch,global_step,kind,path,monitor,value,run_id\r"
    )
    .expect("write");
    for i in 0..100_000u64 {
        let value = 1.0 / (i as f64 + 1.0);
        writeln!(
            journal,
            "{i},saved,{},,{},full,run/w.{i:07}.safetensors,val_loss,{value},ab\r",
            i * 10 + 1,
            i * 450
        )
        .expect("write");
        if i % 3 != 0 {
            writeln!(
                journal,
                "{i},deleted,{},,,,run/w.{i:07}.safetensors,,,ab\r",
                i * 10 + 1
            )
            .expect("write");
        }
    }
    journal.flush().expect("flush");

    for (args, output) in [
        (["report", "run", "-o", "big.html"], "big.html"),
        (["report", "run", "--svg", "big.svg"], "big.svg"),
    ] {
        let (out, peak) = ckpt_bounded(d, &args, MEMORY_BOUND);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(
            said.contains("8 metric(s) over 1000000 epoch(s), 100000 checkpoint(s) saved"),
            "{said}"
        );
        let size = std::fs::metadata(d.join(output)).expect("written").len();
        println!(
            "1,000,000 epochs × 8 metrics, 100,000 saves: {output} {} KiB, peak resident memory {} MiB",
            size >> 10,
            peak >> 20
        );
        assert!(size < PAGE_BOUND, "{output}: {size} bytes");
        assert!(peak < MEMORY_BOUND, "{output}: {peak} bytes resident");
    }
    let page = std::fs::read_to_string(d.join("big.html")).expect("page");
    // Each curve is at most 2,000 points; the spike is one of them.
    for curve in page.split("<polyline class=\"curve").skip(1) {
        let points = curve.split(" points=\"").nth(1).expect("points");
        let points = &points[..points.find('"').expect("end")];
        assert!(
            points.split(' ').count() <= 2000,
            "a curve of {}",
            points.split(' ').count()
        );
    }
    let loss = page
        .split("data-metric=\"loss\" points=\"")
        .nth(1)
        .expect("the loss curve");
    let lowest_y = loss[..loss.find('"').expect("end")]
        .split(' ')
        .filter_map(|p| p.split(',').nth(1)?.parse::<f64>().ok())
        .fold(f64::MAX, f64::min);
    // The chart is 300 high, its plot from 16 to 260: a loss of 50 among values around 1
    // is drawn in its top quarter (val_loss's spike of 55 at the very top); without the
    // spike, the whole curve would lie near the bottom.
    assert!(
        lowest_y < 80.0,
        "the spike at the top of the chart: {lowest_y}"
    );
    assert!(page.contains("1000000 rows: each curve is drawn from the lowest and highest value"));
    assert!(
        page.contains("showing 1000 of 100000 checkpoints"),
        "the table's note"
    );
    assert_eq!(table_rows(&page).len(), 1000);
}

#[test]
fn the_largest_page_within_the_limits_stays_under_its_bound() {
    use std::io::Write as _;
    // Everything at its limit, in the characters that escape to the most bytes (a
    // right-to-left override, 3 bytes, is written as the 8 characters `\u{202e}`): 256
    // metric columns of long names, enough rows to be drawn by spans, 1,500 saves of long
    // paths and kinds, each of its own run.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = d.join("run");
    std::fs::create_dir(&run).expect("folder");
    let wide = |n: usize| "\u{202e}".repeat(n);
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let names: Vec<String> = (0..256).map(|i| format!("m{i:03}{}", wide(300))).collect();
    let mut history =
        std::io::BufWriter::new(std::fs::File::create(run.join("history.csv")).expect("history"));
    let header: Vec<String> = names.iter().map(|n| quoted(n)).collect();
    writeln!(history, "epoch,{}\r", header.join(",")).expect("write");
    let mut x = 1u64;
    for e in 0..6003u32 {
        let row: Vec<String> = (0..256)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{:.6}", (x >> 11) as f64 / (1u64 << 53) as f64 * 1e6)
            })
            .collect();
        writeln!(history, "{e},{}\r", row.join(",")).expect("write");
    }
    history.flush().expect("flush");
    let mut journal = std::io::BufWriter::new(
        std::fs::File::create(run.join(".ckpt-run.journal.csv")).expect("journal"),
    );
    writeln!(
        journal,
        "seq,event,epoch,batch,global_step,kind,path,monitor,value,run_id\r"
    )
    .expect("write");
    for i in 0..1500u64 {
        writeln!(
            journal,
            "{i},saved,{},{i},{i},{},{},{},{},{i:064x}\r",
            i % 6000 + 1,
            quoted(&wide(100)),
            quoted(&format!("run/{}{i}", wide(4000))),
            quoted(&names[0]),
            i as f64 * 1e3
        )
        .expect("write");
    }
    journal.flush().expect("flush");
    for (flag, output) in [("-o", "w.html"), ("--svg", "w.svg")] {
        let (out, peak) = ckpt_bounded(
            d,
            &["report", "run", flag, output, "--monitor", &names[0]],
            MEMORY_BOUND,
        );
        assert!(out.status.success(), "{flag}: {}", text(&out.stderr));
        let size = std::fs::metadata(d.join(output)).expect("written").len();
        println!(
            "the largest page: {output} {} KiB, peak resident memory {} MiB",
            size >> 10,
            peak >> 20
        );
        assert!(size < PAGE_BOUND, "{output}: {size} bytes");
    }
}
