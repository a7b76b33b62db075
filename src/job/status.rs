//! The daemon's status page: one HTML document, no external asset, no script: the last runs
//! with their outcome and duration, the health checks, the snapshots per source, and two
//! inline SVG charts over the last 90 days (each repository's size, and the bytes each night
//! added). Everything comes from the run history and the last health report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::health::HealthReport;
use super::history::{History, RunRow, unix_seconds as seconds};
use crate::error::Result;

/// How far back the charts look.
pub const CHART_DAYS: i64 = 90;

/// HTML-escape `s` (text and attribute values alike).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn bytes(n: f64) -> String {
    super::human_bytes(n as u64)
}

/// A chart: one polyline per series over time, with its axis labels. `points` are (unix
/// seconds, value).
fn line_chart(id: &str, title: &str, series: &BTreeMap<String, Vec<(f64, f64)>>) -> String {
    let (w, h, pad) = (640.0, 200.0, 40.0);
    let all: Vec<&(f64, f64)> = series.values().flatten().collect();
    let mut svg = format!(
        "<svg id=\"{id}\" role=\"img\" aria-label=\"{t}\" viewBox=\"0 0 {w} {h}\" \
         width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title>{t}</title><rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#fafafa\"/>",
        t = esc(title)
    );
    if all.is_empty() {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#777\">no data yet</text></svg>",
            w / 2.0,
            h / 2.0
        ));
        return svg;
    }
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = all.iter().fold(0.0f64, |m, p| m.max(p.1)).max(1.0);
    let span = (x1 - x0).max(1.0);
    let x = |t: f64| pad + (t - x0) / span * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / y1 * (h - 2.0 * pad);
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"{pad}\" y=\"{ty}\" font-size=\"11\" fill=\"#555\">{top}</text>",
        b = h - pad,
        r = w - pad,
        ty = pad - 8.0,
        top = esc(&bytes(y1)),
    );
    const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" data-series=\"{n}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"2\" points=\"{p}\"/>\
             <text x=\"{lx}\" y=\"{ly}\" font-size=\"11\" fill=\"{colour}\">{n}</text>",
            n = esc(name),
            p = line.join(" "),
            lx = w - pad - 120.0,
            ly = pad + 14.0 * (i as f64 + 1.0),
        );
        for (t, v) in pts {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{}</title></circle>",
                x(*t),
                y(*v),
                esc(&bytes(*v))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The page, as of `now`.
pub fn render(
    history: &History,
    health: Option<&HealthReport>,
    host: &str,
    now: jiff::Timestamp,
) -> Result<String> {
    let runs = history.runs(None, 10_000)?;
    let since = now.as_second() as f64 - (CHART_DAYS * 86400) as f64;
    let recent: Vec<&RunRow> = runs
        .iter()
        .filter(|r| seconds(&r.started).is_some_and(|t| t >= since))
        .collect();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>cairn on {h}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}}\
         .success,.ok{{color:#1a7f37}}.partial{{color:#b35900}}\
         .failure,.interrupted,.fail{{color:#c62828;font-weight:bold}}\
         </style></head><body><h1>cairn on {h}</h1><p>as of {now}</p>",
        h = esc(host),
        now = esc(&now.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
    );

    // Health.
    html.push_str("<h2>Health</h2>");
    match health {
        None => html.push_str("<p id=\"health-none\">no health check has run yet</p>"),
        Some(h) => {
            let _ = write!(
                html,
                "<p id=\"healthy\" class=\"{c}\">{t}</p><table id=\"health\"><tr><th>check</th>\
                 <th>result</th><th>detail</th></tr>",
                c = if h.healthy { "ok" } else { "fail" },
                t = if h.healthy { "healthy" } else { "UNHEALTHY" },
            );
            for c in &h.checks {
                let _ = write!(
                    html,
                    "<tr data-check=\"{n}\"><td>{n}</td><td class=\"{cl}\">{r}</td><td>{d}{f}</td></tr>",
                    n = esc(&c.name),
                    cl = if c.ok { "ok" } else { "fail" },
                    r = if c.ok { "ok" } else { "FAIL" },
                    d = esc(&c.detail),
                    f = c
                        .fix
                        .as_deref()
                        .map(|f| format!(" &rarr; {}", esc(f)))
                        .unwrap_or_default(),
                );
            }
            html.push_str("</table>");
        }
    }

    // The last runs.
    html.push_str(
        "<h2>Runs</h2><table id=\"runs\"><tr><th>started</th><th>job</th><th>run</th>\
         <th>seconds</th><th>outcome</th><th>added</th></tr>",
    );
    for r in runs.iter().take(30) {
        let added: Vec<String> = r
            .added
            .iter()
            .map(|(s, b)| format!("{} {}", esc(s), bytes(*b as f64)))
            .collect();
        let _ = write!(
            html,
            "<tr class=\"run\" data-run=\"{id}\"><td>{t}</td><td>{j}</td><td>{id}</td>\
             <td>{s:.1}</td><td class=\"outcome {o}\">{o}</td><td>{a}</td></tr>",
            id = esc(&r.run_id),
            t = esc(&r.started[..r.started.len().min(19)]),
            j = esc(&r.job),
            s = r.seconds,
            o = esc(&r.outcome),
            a = added.join(", "),
        );
    }
    html.push_str("</table>");

    // Snapshots per source (the runs' new snapshots in the last 90 days).
    let mut per_source: BTreeMap<String, (usize, String, String)> = BTreeMap::new();
    for r in &recent {
        for pair in r.report["snapshots"].as_array().into_iter().flatten() {
            let (Some(source), Some(id)) = (pair[0].as_str(), pair[1].as_str()) else {
                continue;
            };
            let e =
                per_source
                    .entry(source.to_string())
                    .or_insert((0, String::new(), String::new()));
            e.0 += 1;
            if r.started > e.2 {
                e.1 = id.to_string();
                e.2 = r.started.clone();
            }
        }
    }
    html.push_str(
        "<h2>Snapshots</h2><table id=\"snapshots\"><tr><th>source</th>\
         <th>in the last 90 days</th><th>latest</th><th>at</th></tr>",
    );
    for (source, (n, id, at)) in &per_source {
        let _ = write!(
            html,
            "<tr data-source=\"{s}\"><td>{s}</td><td>{n}</td><td>{i}</td><td>{a}</td></tr>",
            s = esc(source),
            i = esc(&id[..id.len().min(8)]),
            a = esc(&at[..at.len().min(19)]),
        );
    }
    html.push_str("</table>");

    // Charts, oldest first.
    let mut sizes: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut added: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in recent.iter().rev() {
        let Some(t) = seconds(&r.started) else {
            continue;
        };
        for x in r.report["repositories"].as_array().into_iter().flatten() {
            if let (Some(name), Some(size)) = (x["name"].as_str(), x["stored_bytes"].as_f64()) {
                sizes.entry(name.to_string()).or_default().push((t, size));
            }
        }
        if !r.added.is_empty() {
            let total: u64 = r.added.iter().map(|(_, b)| b).sum();
            added
                .entry(r.job.clone())
                .or_default()
                .push((t, total as f64));
        }
    }
    html.push_str("<h2>Repository size</h2>");
    html.push_str(&line_chart(
        "chart-size",
        "repository size, last 90 days",
        &sizes,
    ));
    html.push_str("<h2>Added each night</h2>");
    html.push_str(&line_chart(
        "chart-added",
        "bytes added per run, last 90 days",
        &added,
    ));
    html.push_str("</body></html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn an_empty_history_still_renders() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        let page = render(&h, None, "web<1>", jiff::Timestamp::now()).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("cairn on web&lt;1&gt;"));
        assert_eq!(page.matches("no data yet").count(), 2);
        // Nothing is fetched: the only URLs are the SVG namespace of the two charts.
        assert_eq!(page.matches("http").count(), 2, "{page}");
    }
}
