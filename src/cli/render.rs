//! Human and JSON output.

use std::io::{self, Write};

use serde::Serialize;

use crate::commands::IssueReport;
use crate::commands::backlog::BacklogReport;
use crate::commands::embed::EmbedReport;
use crate::commands::ingest::IngestReport;
use crate::commands::search::SearchReport;
use crate::commands::status::StatusReport;
use crate::ingest::harvest::HarvestReport;
use crate::ingest::snapshot::SnapshotReport;
use crate::store::backlog::MissingReason;

/// At most this many input problems are logged one by one.
const ISSUES_SHOWN: usize = 20;

/// Writes `value` as one pretty JSON document.
pub fn json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Logs input problems as warnings, the first few in full.
pub fn warn_issues(issues: &[IssueReport]) {
    for issue in issues.iter().take(ISSUES_SHOWN) {
        match issue.line {
            Some(line) => tracing::warn!("{}:{line}: {}", issue.file, issue.message),
            None => tracing::warn!("{}: {}", issue.file, issue.message),
        }
    }
    if issues.len() > ISSUES_SHOWN {
        tracing::warn!(
            "... and {} more input problems (all of them are in the --json output)",
            issues.len() - ISSUES_SHOWN
        );
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in a short human form.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A table with right-aligned columns after the first.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: Vec<String>) -> Self {
        Table { rows: vec![header] }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn write(&self, out: &mut impl Write, indent: &str) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                if c == 0 {
                    line.push_str(&format!("{cell:<w$}", w = widths[c]));
                } else {
                    line.push_str(&format!("  {cell:>w$}", w = widths[c]));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The backlog report as tables, one per model.
pub fn backlog(out: &mut impl Write, report: &BacklogReport) -> io::Result<()> {
    for (i, model) in report.models.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        if model.waiting == 0 {
            writeln!(
                out,
                "{}: nothing waits; every paper has a current vector",
                model.alias
            )?;
            continue;
        }
        writeln!(
            out,
            "{}: {} papers wait ({})",
            model.alias,
            thousands(model.waiting),
            model.backlog_file.as_deref().unwrap_or("no backlog file")
        )?;
        let reasons: Vec<MissingReason> = MissingReason::ALL
            .into_iter()
            .filter(|r| model.waiting_by_reason.contains_key(r.as_str()))
            .collect();
        let mut header = vec!["year".to_string(), "papers".to_string()];
        header.extend(reasons.iter().map(|r| r.as_str().to_string()));
        header.push("waiting".into());
        let mut table = Table::new(header);
        for year in &model.years {
            let waiting: u64 = year.waiting.values().sum();
            let mut row = vec![year.year.clone(), thousands(year.papers)];
            row.extend(
                reasons
                    .iter()
                    .map(|r| thousands(year.waiting.get(r.as_str()).copied().unwrap_or(0))),
            );
            row.push(thousands(waiting));
            table.push(row);
        }
        table.write(out, "  ")?;
        for [from, to, reason] in &model.quarantined {
            writeln!(out, "  moved damaged {from} to {to} ({reason})")?;
        }
    }
    Ok(())
}

/// The embed report: a summary and a per-year table for each model.
pub fn embed(out: &mut impl Write, report: &EmbedReport) -> io::Result<()> {
    for (i, model) in report.models.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        if model.dry_run {
            writeln!(
                out,
                "{}: would embed {} papers (dry run: no model loaded, nothing written)",
                model.alias,
                thousands(model.planned)
            )?;
        } else if model.planned == 0 {
            writeln!(
                out,
                "{}: nothing to embed; every paper has a current vector",
                model.alias
            )?;
        } else {
            writeln!(
                out,
                "{}: embedded {} papers in {:.1} s ({:.1} papers/s){}",
                model.alias,
                thousands(model.embedded),
                model.elapsed_s,
                model.papers_per_s,
                model
                    .model
                    .as_ref()
                    .map(|m| format!(" with {}", m.name))
                    .unwrap_or_default()
            )?;
        }
        if !model.years.is_empty() {
            let mut table = if model.dry_run {
                Table::new(["year", "papers", "why"].map(String::from).to_vec())
            } else {
                Table::new(
                    ["year", "planned", "embedded", "failed"]
                        .map(String::from)
                        .to_vec(),
                )
            };
            for year in &model.years {
                let planned: u64 = year.planned.values().sum();
                if model.dry_run {
                    let why: Vec<String> = year
                        .planned
                        .iter()
                        .map(|(r, n)| format!("{r} {}", thousands(*n)))
                        .collect();
                    table.push(vec![year.year.clone(), thousands(planned), why.join(", ")]);
                } else {
                    table.push(vec![
                        year.year.clone(),
                        thousands(planned),
                        thousands(year.embedded),
                        thousands(year.failed),
                    ]);
                }
            }
            table.write(out, "  ")?;
        }
        if model.empty_text > 0 {
            writeln!(
                out,
                "  {} papers have an empty title and abstract and are skipped",
                thousands(model.empty_text)
            )?;
        }
        if model.not_found > 0 {
            writeln!(
                out,
                "  {} papers vanished from their CSV during the run; they stay in the backlog",
                thousands(model.not_found)
            )?;
        }
        if !model.files.is_empty() {
            let verb = if model.dry_run { "would change" } else { "wrote" };
            writeln!(out, "  {verb}: {}", model.files.join(", "))?;
        }
        if let Some(replacement) = &model.replacement {
            if replacement.promoted {
                writeln!(
                    out,
                    "  every vector is now {}'s; the old {} vectors are kept in {} (delete them when no longer needed)",
                    replacement.to,
                    replacement.from,
                    replacement.old_vectors.as_deref().unwrap_or("?")
                )?;
            } else {
                writeln!(
                    out,
                    "  replacing {} by {}: {} papers left; readers keep the old vectors until all are done \
                     (rerun with --reembed to continue)",
                    replacement.from,
                    replacement.to,
                    thousands(replacement.remaining)
                )?;
            }
        }
        if !model.dry_run && model.waiting_after > 0 {
            writeln!(
                out,
                "  {} papers still wait (papersys backlog shows why)",
                thousands(model.waiting_after)
            )?;
        }
    }
    Ok(())
}

/// The status report as tables, one per model.
pub fn status(out: &mut impl Write, report: &StatusReport) -> io::Result<()> {
    writeln!(out, "data root: {}", report.data_root)?;
    for model in &report.models {
        writeln!(out)?;
        writeln!(
            out,
            "{} ({}, {} dimensions, {})",
            model.alias, model.name, model.dimension, model.directory
        )?;
        let mut table = Table::new(
            ["year", "papers", "vectors", "waiting", "file size"]
                .map(String::from)
                .to_vec(),
        );
        for year in &model.years {
            table.push(vec![
                year.year.clone(),
                thousands(year.papers),
                thousands(year.vectors),
                thousands(year.waiting),
                year.file_bytes.map(bytes).unwrap_or_else(|| "-".into()),
            ]);
        }
        table.push(vec![
            "total".into(),
            thousands(model.papers),
            thousands(model.vectors),
            thousands(model.waiting),
            String::new(),
        ]);
        table.write(out, "  ")?;
        if let Some(pid) = model.writer_pid {
            writeln!(
                out,
                "  papersys (pid {pid}) is writing to this model now: these numbers are a snapshot"
            )?;
        }
        if model.empty_text > 0 {
            writeln!(
                out,
                "  {} papers have an empty title and abstract and are never embedded",
                thousands(model.empty_text)
            )?;
        }
        if !model.backlog_current {
            writeln!(
                out,
                "  backlog.parquet is older than the inputs (the numbers above are current): \
                 `papersys backlog` or `papersys embed` rewrites it"
            )?;
        }
        for problem in &model.problems {
            writeln!(out, "  problem: {problem}")?;
        }
    }
    Ok(())
}

/// The ingest report: a harvest or a snapshot import.
pub fn ingest(out: &mut impl Write, report: &IngestReport) -> io::Result<()> {
    match report {
        IngestReport::Harvest(report) => harvest(out, report),
        IngestReport::Snapshot(report) => snapshot(out, report),
    }
}

/// A snapshot import: lines read, rows imported, what changed per year.
fn snapshot(out: &mut impl Write, report: &SnapshotReport) -> io::Result<()> {
    let c = &report.counts;
    writeln!(
        out,
        "imported {} of {} lines from {} in {:.1} s ({} filtered out by category, {} bad lines)",
        thousands(c.imported),
        thousands(c.lines),
        report.file.display(),
        report.seconds,
        thousands(c.filtered_out),
        thousands(c.bad_lines)
    )?;
    let m = &report.merge.totals;
    writeln!(
        out,
        "{} new, {} updated, {} unchanged, {} older than stored (ignored); latest.csv: {} rows",
        thousands(m.new),
        thousands(m.updated),
        thousands(m.unchanged),
        thousands(m.older),
        thousands(report.merge.latest_rows)
    )?;
    year_table(out, &m.per_year)?;
    for issue in report.issues.iter().take(ISSUES_SHOWN) {
        writeln!(out, "  line {}: {}", issue.line, issue.message)?;
    }
    Ok(())
}

fn year_table(
    out: &mut impl Write,
    per_year: &std::collections::BTreeMap<String, crate::ingest::merge::YearCounts>,
) -> io::Result<()> {
    if per_year.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(
        ["year", "new", "updated", "unchanged", "rows"]
            .map(String::from)
            .to_vec(),
    );
    for (year, c) in per_year {
        table.push(vec![
            year.clone(),
            thousands(c.new),
            thousands(c.updated),
            thousands(c.unchanged),
            thousands(c.rows),
        ]);
    }
    table.write(out, "  ")
}

/// A harvest: what was received, what changed per year, and how the server
/// was treated.
fn harvest(out: &mut impl Write, report: &HarvestReport) -> io::Result<()> {
    let sets = report.sets.join(", ");
    if report.dry_run {
        writeln!(
            out,
            "dry run: {} records on the first pages of {} windows {}..{} (sets: {sets}); nothing written",
            thousands(report.records),
            report.windows.len(),
            report.from,
            report.until
        )?;
    } else {
        writeln!(
            out,
            "harvested {} records ({} deleted, {} skipped) from {}..{} in {} windows (sets: {sets}, format {})",
            thousands(report.records),
            thousands(report.deleted),
            thousands(report.skipped),
            report.from,
            report.until,
            report.windows.iter().filter(|w| w.completed).count(),
            report.metadata_prefix
        )?;
        writeln!(
            out,
            "{} new, {} updated, {} unchanged, {} older than stored (ignored); latest.csv: {} rows",
            thousands(report.new),
            thousands(report.updated),
            thousands(report.unchanged),
            thousands(report.older),
            thousands(report.latest_rows)
        )?;
    }
    year_table(out, &report.per_year)?;
    writeln!(
        out,
        "{} requests, {} retries, {:.1} s waited, {:.1} s in all{}",
        report.client.requests,
        report.client.retries,
        report.client.waited_s,
        report.elapsed_s,
        if report.limit_reached {
            "; stopped at --limit"
        } else {
            ""
        }
    )?;
    for message in &report.skipped_examples {
        writeln!(out, "  skipped: {message}")?;
    }
    Ok(())
}

/// Writes each value as one compact JSON line.
pub fn json_lines<T: Serialize>(out: &mut impl Write, values: &[T]) -> io::Result<()> {
    for value in values {
        serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Width to cut table lines to: the terminal's when stdout is one, else
/// `$COLUMNS`, else none.
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal()
        && let Some((terminal_size::Width(w), _)) = terminal_size::terminal_size()
    {
        return Some(usize::from(w));
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse().ok())
}

/// Search results: one line each (rank, score, id, year, primary category,
/// title cut to `width`).
pub fn search(out: &mut impl Write, report: &SearchReport, width: Option<usize>) -> io::Result<()> {
    if report.results.is_empty() {
        return writeln!(out, "{}: no paper matches the filters", report.model);
    }
    let header = ["rank", "score", "paper_id", "year", "category", "title"].map(String::from);
    let rows: Vec<[String; 6]> = report
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            [
                (i + 1).to_string(),
                format!("{:.4}", r.score),
                r.paper_id.clone(),
                r.year.to_string(),
                r.categories.first().cloned().unwrap_or_else(|| "-".into()),
                r.title.clone(),
            ]
        })
        .collect();
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = format!(
            "{:>w0$}  {:>w1$}  {:<w2$}  {:>w3$}  {:<w4$}  ",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        let room = width.map(|w| w.saturating_sub(line.chars().count()));
        line.push_str(&cut(&row[5], room));
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `text` cut to `room` characters, with an ellipsis when cut.
fn cut(text: &str, room: Option<usize>) -> String {
    match room {
        Some(room) if text.chars().count() > room => {
            let mut s: String = text.chars().take(room.saturating_sub(1)).collect();
            s.push('…');
            s
        }
        _ => text.to_string(),
    }
}

/// `papersys prefs add` / `prefs import`.
pub fn prefs_change(
    out: &mut impl Write,
    report: &crate::commands::prefs::PrefsChangeReport,
) -> io::Result<()> {
    if let Some(file) = &report.file {
        let format = match report.format {
            Some(crate::prefs::import::ImportFormat::Zotero) => "Zotero export",
            _ => "preference file",
        };
        writeln!(out, "{file} ({format}): {} rows", thousands(report.rows))?;
    }
    writeln!(
        out,
        "recorded {} preferences ({} likes, {} dislikes, {} neutral) in {}",
        thousands(report.recorded as u64),
        report.likes,
        report.dislikes,
        report.neutral,
        report.store
    )?;
    if report.duplicates > 0 || report.conflicts > 0 {
        writeln!(
            out,
            "{} ids repeated, {} papers with a changed or conflicting preference (the latest recorded_at wins)",
            report.duplicates, report.conflicts
        )?;
    }
    if report.not_arxiv > 0 {
        writeln!(
            out,
            "{} items without an arXiv id skipped",
            thousands(report.not_arxiv)
        )?;
    }
    if !report.unknown.is_empty() {
        writeln!(
            out,
            "{} papers are not in the metadata yet (kept; they count once ingested and embedded)",
            thousands(report.unknown.len() as u64)
        )?;
    }
    if !report.input_issues.is_empty() {
        writeln!(
            out,
            "{} rows skipped (see the warnings above)",
            report.input_issues.len()
        )?;
    }
    Ok(())
}

/// `papersys prefs list`.
pub fn prefs_list(out: &mut impl Write, report: &crate::commands::prefs::PrefsListReport) -> io::Result<()> {
    let mut rows = vec![vec![
        "paper".to_string(),
        "preference".into(),
        "recorded".into(),
        "title".into(),
    ]];
    for entry in &report.preferences {
        let title = entry.title.as_deref().unwrap_or("(not in the metadata)");
        let title: String = title.chars().take(70).collect();
        rows.push(vec![
            entry.paper_id.clone(),
            entry.preference.to_string(),
            entry
                .recorded_at
                .get(..10)
                .unwrap_or(&entry.recorded_at)
                .to_string(),
            title,
        ]);
    }
    left_aligned(out, &rows)?;
    writeln!(
        out,
        "{} likes, {} dislikes, {} neutral in {} ({} not in the metadata)",
        report.likes, report.dislikes, report.neutral, report.store, report.unknown
    )
}

/// Papers of a recommendation shown on the terminal.
const PICKS_SHOWN: usize = 20;

/// `papersys recommend`.
pub fn recommend(
    out: &mut impl Write,
    report: &crate::commands::recommend::RecommendReport,
) -> io::Result<()> {
    let c = &report.counts;
    writeln!(
        out,
        "{} papers of {} recommended out of {} scored ({} likes, {} dislikes, {} background papers learned from)",
        c.recommended,
        report.window.description,
        c.scored,
        c.likes_used,
        c.dislikes_used,
        c.background_sampled
    )?;
    let left_out = c.candidates_without_vectors + c.candidates_non_finite;
    if left_out > 0 {
        writeln!(
            out,
            "{left_out} candidates left out: no usable vector in every model"
        )?;
    }
    let mut rows = vec![vec![
        "score".to_string(),
        "paper".into(),
        "date".into(),
        "title".into(),
    ]];
    for pick in report.recommended.iter().take(PICKS_SHOWN) {
        rows.push(vec![
            format!("{:.3}", pick.score),
            pick.id.clone(),
            pick.date.clone(),
            pick.title.chars().take(70).collect(),
        ]);
    }
    left_aligned(out, &rows)?;
    if report.recommended.len() > PICKS_SHOWN {
        writeln!(out, "... and {} more", report.recommended.len() - PICKS_SHOWN)?;
    }
    match &report.run_dir {
        Some(dir) => writeln!(out, "written to {dir} (recommended.md to read)"),
        None => writeln!(out, "dry run: nothing written"),
    }
}

/// Rows as left-aligned columns (the last one, a title, unpadded).
fn left_aligned(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

/// The summary of `papersys update`: one line per stage.
pub fn update(out: &mut impl Write, report: &crate::commands::update::UpdateReport) -> io::Result<()> {
    use crate::commands::update::StageStatus;
    for stage in &report.stages {
        let status = match stage.status {
            StageStatus::Ok => "ok",
            StageStatus::Failed => "FAILED",
            StageStatus::Skipped => "skipped",
        };
        let detail = match (&stage.summary, &stage.error) {
            (_, Some(error)) => error.as_str(),
            (Some(summary), None) => summary.as_str(),
            (None, None) => "",
        };
        writeln!(
            out,
            "{:<10} {:<8} {:>7.1} s  {detail}",
            stage.stage.as_str(),
            status,
            stage.seconds
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_800_000), "2,800,000");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3_600_000_000), "3.6 GB");
    }

    #[test]
    fn titles_are_cut_to_the_width() {
        assert_eq!(cut("abcdef", Some(4)), "abc…");
        assert_eq!(cut("abc", Some(4)), "abc");
        assert_eq!(cut("abcdef", None), "abcdef");
    }
}
