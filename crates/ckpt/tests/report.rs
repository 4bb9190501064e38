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
fn the_output_replaces_a_report_but_never_another_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("run");
    std::fs::create_dir(&folder).expect("folder");
    let history = "epoch,loss\n0,0.5\n1,0.25\n";
    std::fs::write(folder.join("history.csv"), history).expect("history");
    let not_a_report = b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ";
    std::fs::write(folder.join("w.safetensors"), not_a_report).expect("file");
    // Written twice, in both kinds, over each other: each replaces a report.
    for args in [
        &["report", "run", "-o", "out"][..],
        &["report", "run", "-o", "out"],
        &["report", "run", "--svg", "out"],
        &["report", "run", "--svg", "out"],
        &["report", "run", "-o", "out"],
    ] {
        let out = ckpt(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    // Pointed at the history or at a checkpoint by mistake: refused, both left as they were.
    for target in ["run/history.csv", "run/w.safetensors"] {
        for flag in ["-o", "--svg"] {
            let out = ckpt(dir.path(), &["report", "run", flag, target]);
            assert_eq!(out.status.code(), Some(2), "{target}");
            assert!(
                text(&out.stderr).contains("is not a report: refusing to overwrite it"),
                "{}",
                text(&out.stderr)
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(folder.join("history.csv")).expect("history"),
        history
    );
    assert_eq!(
        std::fs::read(folder.join("w.safetensors")).expect("file"),
        not_a_report
    );
}
