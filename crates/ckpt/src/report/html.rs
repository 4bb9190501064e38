//! The report as one self-contained HTML page: no network, no external script or font.
//! Charts are inline SVG drawn here (they show without JavaScript); a few lines of inline
//! script only record that the page loaded without errors and how long it took.

use std::fmt::Write as _;

use super::data::{plottable, Checkpoint, Report, Series, Status};

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
/// More epoch ticks than an axis ever gets (about six).
const MAX_TICKS: usize = 16;

/// The longest metric name (or family, or monitor) a page or picture shows in full, in
/// characters.
pub(crate) const NAME: usize = 200;
/// The longest path, problem or option value a page shows, in characters.
const PATH: usize = 200;
/// The longest text in places with little room (axis labels, a marker's tooltip, a kind).
const SHORT: usize = 40;
/// The longest path in a marker's tooltip.
const TIP: usize = 100;
/// The longest note.
const NOTE: usize = 600;

/// Text from outside (a name, a path, a message), as the page and the picture show it:
/// shortened to `max` characters, and made printable ([`crate::printable`]: control
/// characters, which XML 1.0 forbids even as character references, and the characters
/// that reorder or break lines, written as visible escapes such as `\u{1b}`). Every piece
/// of text that reaches the page or the SVG passes here.
pub(crate) fn clean(text: &str, max: usize) -> String {
    crate::printable(&crate::shorten(text, max)).into_owned()
}

/// [`clean`], then escaped for HTML and XML text and attribute values.
fn esc(text: &str, max: usize) -> String {
    let text = clean(text, max);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as the page shows it.
fn num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// Metric families: `loss` with `val_loss`, `accuracy` with `val_accuracy`, each other
/// metric with its `val_` twin; in the history's order.
pub(crate) fn families(metrics: &[(String, Series)]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, (name, _)) in metrics.iter().enumerate() {
        let family = name.strip_prefix("val_").unwrap_or(name).to_owned();
        match out.iter_mut().find(|(f, _)| *f == family) {
            Some((_, members)) => members.push(i),
            None => out.push((family, vec![i])),
        }
    }
    out
}

/// Where on a chart a checkpoint's marker goes: its epoch (a save inside an epoch, half an
/// epoch earlier), at its monitored value, else at the monitor's logged value that epoch.
pub(crate) fn marker_position(
    c: &Checkpoint,
    monitor_series: Option<&Series>,
) -> Option<(f64, f64)> {
    let x = c.epoch as f64 - if c.batch.is_some() { 0.5 } else { 0.0 };
    let y = c.value.or_else(|| {
        monitor_series?
            .iter()
            .find(|(e, _)| (*e - c.epoch as f64).abs() < 1e-9)
            .map(|(_, v)| *v)
    })?;
    plottable(y).then_some((x, y))
}

struct Scale {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

/// The region a chart shows for `points` (each [`plottable`], epochs within the core's
/// counters): their extent, at least one epoch wide, with 6% of room above and below:
/// `(x0, x1, y0, y1)`. Neither span is ever zero, even where adding one epoch or the
/// margin to a large value would not change it.
pub(crate) fn bounds(points: impl Iterator<Item = (f64, f64)>) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let width = (x1 - x0).max(1.0).max(x0.abs() * 1e-6);
    let pad = ((y1 - y0) * 0.06)
        .max(y0.abs().max(y1.abs()) * 1e-6)
        .max(1e-9);
    (x0, x0 + width, y0 - pad, y1 + pad)
}

impl Scale {
    fn new(points: impl Iterator<Item = (f64, f64)>) -> Scale {
        let (x0, x1, y0, y1) = bounds(points);
        Scale { x0, x1, y0, y1 }
    }
    fn x(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)
    }
}

fn axes(svg: &mut String, s: &Scale, family: &str) {
    let _ = write!(
        svg,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{}" height="{}"/>"#,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
    for k in 0..=4 {
        let v = s.y0 + (s.y1 - s.y0) * k as f64 / 4.0;
        let y = s.y(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            num(v)
        );
    }
    // Epoch ticks at 1, 2 or 5 times a power of ten, never between epochs.
    let raw = ((s.x1 - s.x0) / 6.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= raw)
        .unwrap_or(raw);
    // Counted, not stepped: adding a step to a large epoch may not change it.
    let first = (s.x0 / step).ceil();
    for k in 0..MAX_TICKS {
        let e = (first + k as f64) * step;
        if e > s.x1 + 1e-9 {
            break;
        }
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            s.x(e),
            HEIGHT - BOTTOM + 16.0,
            e.round()
        );
    }
    let _ = write!(
        svg,
        r#"<text class="label" x="{}" y="{}" text-anchor="middle">epoch</text><text class="label" x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 6.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        esc(family, SHORT)
    );
}

/// The page.
pub(crate) fn render(r: &Report) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = format!("ckpt report: {}", r.folder);
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{}</title>
<style>
body{{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2433;max-width:1180px}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:16px;margin:20px 0 4px}}
.note{{color:#8a5a00}} svg{{display:block;background:#fff}}
.frame{{fill:none;stroke:#c9ced8}} .grid{{stroke:#eef0f4}} .tick{{font-size:11px;fill:#5b6272}} .label{{font-size:12px;fill:#1d2433}}
.curve{{fill:none;stroke-width:1.6}} .s0{{stroke:#2a6fdb}} .s1{{stroke:#e0672b}} .s2{{stroke:#2e9d57}} .s3{{stroke:#8b4fd1}}
.val{{stroke-dasharray:5 3}}
.marker circle{{stroke-width:1.5}} .kept circle{{fill:#2a6fdb;stroke:#fff}} .deleted circle,.replaced circle{{fill:#fff;stroke:#9aa1ad}}
.damaged circle{{fill:#d62f2f;stroke:#7a0f0f}} .best circle{{fill:#f5b400;stroke:#7a5a00;stroke-width:2}} .latest circle{{stroke:#1d2433;stroke-width:2}}
.legend{{font-size:12px;margin:2px 0 0}} .legend span{{margin-right:14px}}
table{{border-collapse:collapse;margin-top:8px;font-size:13px}} td,th{{padding:3px 8px;border-bottom:1px solid #eef0f4;text-align:left}}
td.n{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}} #checkpoints td:first-child{{white-space:nowrap}} #checkpoints td:last-child{{max-width:360px}} tr:target{{background:#fff6d6}}
.badge{{border-radius:3px;padding:0 5px;font-size:12px}} .b-kept{{background:#e3edfc}} .b-damaged{{background:#fbe0e0}}
.b-deleted,.b-replaced{{background:#eef0f4;color:#5b6272}} .b-best{{background:#fff0c2}} .b-latest{{background:#e4f4e9}} .b-other{{background:#efe4f8}}
.other-run circle{{opacity:.5}} tr.other-run td{{color:#5b6272}}
</style></head>
<body data-ready="0" data-errors="0">
<script>window.addEventListener("error",function(){{var b=document.body;b.dataset.errors=String(Number(b.dataset.errors)+1);}});</script>
<h1>{}</h1>
"#,
        esc(&title, PATH),
        esc(&title, PATH)
    );
    if let Some(m) = &r.monitor {
        let better = match r.direction {
            model_checkpoint::Direction::Maximize => "higher is better",
            _ => "lower is better",
        };
        let _ = writeln!(page, "<p>monitor: <b>{}</b> ({better})</p>", esc(m, NAME));
    }
    for note in &r.notes {
        let _ = writeln!(page, r#"<p class="note">{}</p>"#, esc(note, NOTE));
    }
    runs(&mut page, r);
    if !r.options.is_empty() {
        page.push_str("<h2>Run</h2><table class=\"options\">");
        for (k, v) in &r.options {
            let _ = write!(
                page,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(k, SHORT),
                esc(v, PATH)
            );
        }
        page.push_str("</table>\n");
    }

    let families = families(&r.metrics);
    let monitor_family = r
        .monitor
        .as_deref()
        .map(|m| m.strip_prefix("val_").unwrap_or(m).to_owned());
    let monitor_series = r
        .monitor
        .as_deref()
        .and_then(|m| r.metrics.iter().find(|(n, _)| n == m))
        .map(|(_, s)| s);
    // Markers go on the monitored metric's chart, or on a chart of their own.
    let marker_chart = families
        .iter()
        .position(|(f, _)| Some(f) == monitor_family.as_ref());
    for (index, (family, members)) in families.iter().enumerate() {
        let with_markers = marker_chart == Some(index);
        let points = members.iter().flat_map(|&m| r.metrics[m].1.iter().copied());
        let markers: Vec<(f64, f64)> = if with_markers {
            r.checkpoints
                .iter()
                .filter_map(|c| marker_position(c, monitor_series))
                .collect()
        } else {
            Vec::new()
        };
        let scale = Scale::new(points.chain(markers.iter().copied()));
        chart(
            &mut page,
            r,
            family,
            members,
            &scale,
            with_markers,
            monitor_series,
        );
    }
    if marker_chart.is_none() && !r.checkpoints.is_empty() {
        let name = r
            .monitor
            .clone()
            .unwrap_or_else(|| "checkpoints".to_owned());
        let points: Vec<(f64, f64)> = r
            .checkpoints
            .iter()
            .filter_map(|c| marker_position(c, monitor_series))
            .collect();
        let scale = Scale::new(points.into_iter());
        chart(&mut page, r, &name, &[], &scale, true, monitor_series);
    }

    table(&mut page, r);
    page.push_str(
        r#"<script>window.addEventListener("load",function(){setTimeout(function(){var b=document.body;b.dataset.renderMs=performance.now().toFixed(1);b.dataset.ready="1";},0);});</script>
</body></html>
"#,
    );
    page
}

fn chart(
    page: &mut String,
    r: &Report,
    family: &str,
    members: &[usize],
    scale: &Scale,
    with_markers: bool,
    monitor_series: Option<&Series>,
) {
    let _ = write!(
        page,
        r#"<section class="chart" data-family="{}"><h2>{}</h2><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{} over epochs">"#,
        esc(family, NAME),
        esc(family, NAME),
        esc(family, SHORT)
    );
    axes(page, scale, family);
    for (k, &m) in members.iter().enumerate() {
        let (name, series) = &r.metrics[m];
        let mut points = String::with_capacity(series.len() * 14);
        for &(x, y) in series {
            let _ = write!(points, "{:.1},{:.1} ", scale.x(x), scale.y(y));
        }
        let _ = write!(
            page,
            r#"<polyline class="curve s{}{}" data-metric="{}" points="{}"/>"#,
            k % 4,
            if name.starts_with("val_") { " val" } else { "" },
            esc(name, NAME),
            points.trim_end()
        );
    }
    if with_markers {
        for (i, c) in r.checkpoints.iter().enumerate() {
            let Some((x, y)) = marker_position(c, monitor_series) else {
                continue;
            };
            let mut class = format!("marker {}", c.status.as_str());
            if c.best {
                class.push_str(" best");
            }
            if c.latest {
                class.push_str(" latest");
            }
            if c.other_run {
                class.push_str(" other-run");
            }
            let radius = if c.best { 7.0 } else { 5.0 };
            let value = c.value.map(num).unwrap_or_else(|| "-".to_owned());
            let _ = write!(
                page,
                r##"<a href="#ckpt-{i}" class="{class}" data-status="{}"><circle id="point-{i}" cx="{:.1}" cy="{:.1}" r="{radius}"/><title>{} · {} · epoch {} · {} {} · {}</title></a>"##,
                c.status.as_str(),
                scale.x(x),
                scale.y(y),
                esc(&c.path, TIP),
                run_label(r, c.run),
                c.epoch,
                esc(r.monitor.as_deref().unwrap_or("value"), SHORT),
                value,
                c.status.as_str()
            );
        }
    }
    page.push_str("</svg><p class=\"legend\">");
    for (k, &m) in members.iter().enumerate() {
        let name = &r.metrics[m].0;
        let _ = write!(
            page,
            r#"<span><svg width="26" height="8" style="display:inline"><line class="curve s{}{}" x1="0" x2="26" y1="4" y2="4"/></svg> {}</span>"#,
            k % 4,
            if name.starts_with("val_") { " val" } else { "" },
            esc(name, NAME)
        );
    }
    if with_markers {
        page.push_str("<span>● kept</span><span>○ deleted or replaced</span><span style=\"color:#d62f2f\">● damaged</span><span style=\"color:#b08000\">● best</span>");
        if r.checkpoints.iter().any(|c| c.other_run) {
            page.push_str("<span style=\"opacity:.5\">● another run</span>");
        }
    }
    page.push_str("</p></section>\n");
}

fn table(page: &mut String, r: &Report) {
    let monitor = r.monitor.as_deref().unwrap_or("monitored");
    let _ = write!(
        page,
        r#"<h2>Checkpoints</h2><table id="checkpoints"><thead><tr><th>file</th><th>run</th><th>epoch</th><th>batch</th><th>step</th><th>{}</th><th>size</th><th>kind</th><th>status</th><th>verified</th></tr></thead><tbody>"#,
        esc(monitor, NAME)
    );
    for (i, c) in r.checkpoints.iter().enumerate() {
        let mut badges = format!(
            r#"<span class="badge b-{}">{}</span>"#,
            c.status.as_str(),
            c.status.as_str()
        );
        if c.best {
            badges.push_str(r#" <span class="badge b-best">best</span>"#);
        }
        if c.latest {
            badges.push_str(r#" <span class="badge b-latest">latest</span>"#);
        }
        if c.other_run {
            badges.push_str(r#" <span class="badge b-other">another run</span>"#);
        }
        let verified = match (c.status, &c.problem) {
            (Status::Kept, _) => "yes".to_owned(),
            (Status::Damaged, Some(why)) => format!("no: {}", esc(why, PATH)),
            (Status::Deleted, _) => "- (retention deleted it)".to_owned(),
            (Status::Missing, _) => "- (deleted, not by the run)".to_owned(),
            (Status::Replaced, Some(why)) => format!("- ({})", esc(why, PATH)),
            (Status::Replaced, None) => "- (saved over by a later save)".to_owned(),
            _ => "-".to_owned(),
        };
        let run = match c.run.and_then(|k| r.runs.get(k).map(|id| (k, id))) {
            Some((k, id)) => format!(
                r#"<td class="n" title="run id {}">{}</td>"#,
                esc(id, 64),
                k + 1
            ),
            None => "<td class=\"n\">-</td>".to_owned(),
        };
        let _ = write!(
            page,
            r##"<tr id="ckpt-{i}" class="{}{}"><td><a href="#point-{i}">{}</a></td>{run}<td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td><td>{badges}</td><td>{verified}</td></tr>"##,
            c.status.as_str(),
            if c.other_run { " other-run" } else { "" },
            esc(&c.path, PATH),
            c.epoch,
            c.batch.map(|b| b.to_string()).unwrap_or_default(),
            c.step.map(|s| s.to_string()).unwrap_or_default(),
            c.value.map(num).unwrap_or_default(),
            c.size.map(human).unwrap_or_default(),
            esc(&c.kind, SHORT),
        );
    }
    page.push_str("</tbody></table>\n");
}

/// "run K" for a checkpoint of run K (1-based, in the order the runs appear).
fn run_label(r: &Report, run: Option<usize>) -> String {
    match run {
        Some(k) if k < r.runs.len() => format!("run {}", k + 1),
        _ => "run unknown".to_owned(),
    }
}

/// The runs whose saves the folder holds, when there are several: each one's label and id,
/// the newest file's run marked.
fn runs(page: &mut String, r: &Report) {
    /// The most runs listed by id.
    const LISTED: usize = 20;
    if r.runs.len() < 2 {
        return;
    }
    let _ = write!(
        page,
        r#"<h2>Runs</h2><p class="runs" data-runs="{}">"#,
        r.runs.len()
    );
    for (k, id) in r.runs.iter().enumerate().take(LISTED) {
        let newest = if r.newest_run == Some(k) {
            " (the newest file's)"
        } else {
            ""
        };
        let _ = write!(
            page,
            "<span>run {}: <code>{}</code>{newest}</span> ",
            k + 1,
            esc(id, 64)
        );
    }
    if r.runs.len() > LISTED {
        let _ = write!(page, "and {} more", r.runs.len() - LISTED);
    }
    page.push_str("</p>\n");
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
