//! The cost curves: a figure measured at several sizes of the work, kept as
//! data, written as a Markdown table in BENCHMARKS.md's generated part and
//! drawn as an SVG plot under `docs/bench/` (plotters' SVG backend), and a
//! check that a written plot is a well-formed SVG document.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

/// Where the plots go, relative to the Markdown file that links them.
pub const PLOT_DIR: &str = "docs/bench";

/// One measured quantity along the curve.
#[derive(Debug, Clone)]
pub struct Column {
    pub label: String,
    pub unit: String,
    /// One value per x point; `None` where it was not measured (the curve's
    /// notes say why).
    pub values: Vec<Option<f64>>,
    /// Decimals shown in the table.
    pub decimals: usize,
}

/// A group of columns drawn on one y axis (they share a unit).
#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub columns: Vec<usize>,
    pub log_y: bool,
}

/// A cost curve: the x points, the columns measured at each, how they are
/// drawn, and notes (why a value is missing, what was held constant).
#[derive(Debug, Clone)]
pub struct Curve {
    /// The plot's file name without `.svg`.
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub log_x: bool,
    pub xs: Vec<f64>,
    pub columns: Vec<Column>,
    pub panels: Vec<Panel>,
    pub notes: Vec<String>,
}

impl Curve {
    pub fn new(file: &str, title: &str, x_label: &str, xs: &[f64]) -> Curve {
        Curve {
            file: file.into(),
            title: title.into(),
            x_label: x_label.into(),
            log_x: true,
            xs: xs.to_vec(),
            columns: Vec::new(),
            panels: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a column with no values yet; returns its index.
    pub fn column(&mut self, label: &str, unit: &str, decimals: usize) -> usize {
        self.columns.push(Column {
            label: label.into(),
            unit: unit.into(),
            values: vec![None; self.xs.len()],
            decimals,
        });
        self.columns.len() - 1
    }

    /// Draws `columns` on one y axis.
    pub fn panel(&mut self, y_label: &str, columns: &[usize], log_y: bool) {
        self.panels.push(Panel {
            y_label: y_label.into(),
            columns: columns.to_vec(),
            log_y,
        });
    }

    /// Sets the value of `column` at the `i`th x point.
    pub fn set(&mut self, column: usize, i: usize, v: f64) {
        if v.is_finite() {
            self.columns[column].values[i] = Some(v);
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The plot's path relative to the Markdown file.
    pub fn rel_path(&self) -> String {
        format!("{PLOT_DIR}/{}.svg", self.file)
    }

    /// The curve as a Markdown table under a heading that links its plot.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "**{}** ([plot]({}))\n", self.title, self.rel_path());
        let mut head = format!("| {} |", self.x_label);
        let mut rule = String::from("|---|");
        for c in &self.columns {
            let _ = write!(head, " {} ({}) |", c.label.replace('|', "\\|"), c.unit);
            rule.push_str("---|");
        }
        let _ = writeln!(m, "{head}\n{rule}");
        for (i, x) in self.xs.iter().enumerate() {
            let mut line = format!("| {} |", trim_float(*x));
            for c in &self.columns {
                match c.values[i] {
                    Some(v) => {
                        let _ = write!(line, " {:.*} |", c.decimals, v);
                    }
                    None => line.push_str(" – |"),
                }
            }
            let _ = writeln!(m, "{line}");
        }
        for n in &self.notes {
            let _ = writeln!(m, "\n{}", n.replace('\n', " "));
        }
        m.push('\n');
        m
    }

    /// The plot as an SVG document: one chart per panel, stacked.
    pub fn svg(&self) -> anyhow::Result<String> {
        let panels = if self.panels.is_empty() {
            vec![Panel {
                y_label: String::new(),
                columns: (0..self.columns.len()).collect(),
                log_y: false,
            }]
        } else {
            self.panels.clone()
        };
        let height = 60 + 340 * panels.len() as u32;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (760, height)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let root = root
                .titled(&self.title, ("sans-serif", 20))
                .map_err(plot_err)?;
            let areas = root.split_evenly((panels.len(), 1));
            for (area, panel) in areas.iter().zip(&panels) {
                self.draw_panel(area, panel)?;
            }
            root.present().map_err(plot_err)?;
        }
        Ok(out)
    }

    fn draw_panel(
        &self,
        area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        panel: &Panel,
    ) -> anyhow::Result<()> {
        let (xmin, xmax) = bounds(self.xs.iter().copied()).context("a curve without x points")?;
        let ys = panel
            .columns
            .iter()
            .flat_map(|&c| self.columns[c].values.iter().flatten().copied())
            .filter(|y| !panel.log_y || *y > 0.0);
        let (ymin, ymax) = bounds(ys).unwrap_or((0.0, 1.0));
        // Some room around the points; a log axis needs a positive start.
        let (x0, x1) = if self.log_x {
            (xmin.max(1e-9) / 1.3, xmax.max(1e-9) * 1.3)
        } else {
            (xmin, xmax + (xmax - xmin).max(1.0) * 0.05)
        };
        let (y0, y1) = if panel.log_y {
            (ymin.max(1e-6) / 1.5, ymax.max(1e-6) * 1.5)
        } else {
            (0.0f64.min(ymin), ymax.max(1e-9) * 1.15)
        };
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let series_style = |i: usize| Palette99::pick(i).stroke_width(2);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(self.x_label.as_str())
                    .y_desc(panel.y_label.as_str())
                    .draw()
                    .map_err(plot_err)?;
                for (k, &c) in panel.columns.iter().enumerate() {
                    let col = &self.columns[c];
                    let pts: Vec<(f64, f64)> = self
                        .xs
                        .iter()
                        .zip(&col.values)
                        .filter_map(|(x, v)| v.map(|v| (*x, v)))
                        // A log axis has no place for zero.
                        .filter(|(x, y)| (!self.log_x || *x > 0.0) && (!panel.log_y || *y > 0.0))
                        .collect();
                    let style = series_style(k);
                    chart
                        .draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(plot_err)?
                        .label(format!("{} ({})", col.label, col.unit))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], series_style(k))
                        });
                    chart
                        .draw_series(
                            pts.iter()
                                .map(|p| Circle::new(*p, 3, series_style(k).filled())),
                        )
                        .map_err(plot_err)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(plot_err)?;
            }};
        }
        match (self.log_x, panel.log_y) {
            // On a log x axis the labels are the measured sizes only: the
            // axis's own key points crowd between two of them.
            (true, true) => draw!(builder
                .build_cartesian_2d(
                    (x0..x1).log_scale().with_key_points(self.xs.clone()),
                    (y0..y1).log_scale()
                )
                .map_err(plot_err)?),
            (true, false) => draw!(builder
                .build_cartesian_2d(
                    (x0..x1).log_scale().with_key_points(self.xs.clone()),
                    y0..y1
                )
                .map_err(plot_err)?),
            (false, true) => draw!(builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(plot_err)?),
            (false, false) => draw!(builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(plot_err)?),
        }
        Ok(())
    }

    /// Writes the plot to `dir/FILE.svg` and checks what was written.
    pub fn write_svg(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.svg", self.file));
        let svg = self.svg()?;
        fs::write(&path, &svg).with_context(|| format!("writing {}", path.display()))?;
        let back = fs::read_to_string(&path)?;
        check_svg(&back).with_context(|| format!("{} is not a valid SVG", path.display()))?;
        Ok(path)
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Fails unless `text` is a well-formed XML document whose root is an
/// `<svg>` element in the SVG namespace with at least one drawn line
/// (`<polyline>` or `<path>`): every tag closed in order, every attribute
/// quoted, every `&` an entity, nothing after the root.
pub fn check_svg(text: &str) -> anyhow::Result<()> {
    let mut stack: Vec<&str> = Vec::new();
    let mut root_seen = false;
    let mut lines = 0usize;
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let between = &rest[..lt];
        check_text(between)?;
        if stack.is_empty() && root_seen && !between.trim().is_empty() {
            bail!("text after the root element");
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            let end = r.find("?>").context("an unclosed processing instruction")?;
            rest = &r[end + 2..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").context("an unclosed comment")?;
            rest = &r[end + 3..];
            continue;
        }
        if rest.starts_with("<!") {
            let end = rest.find('>').context("an unclosed declaration")?;
            rest = &rest[end + 1..];
            continue;
        }
        let gt = tag_end(rest).context("an unclosed tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => bail!("</{name}> closes {other:?}"),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
        let name = &tag[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        {
            bail!("a bad element name {name:?}");
        }
        check_attributes(&tag[name_end..]).with_context(|| format!("in <{name}>"))?;
        if stack.is_empty() {
            if root_seen {
                bail!("a second root element <{name}>");
            }
            root_seen = true;
            if name != "svg" || !tag.contains("xmlns=\"http://www.w3.org/2000/svg\"") {
                bail!("the root is <{name}>, not <svg xmlns=\"http://www.w3.org/2000/svg\">");
            }
        }
        if name == "polyline" || name == "path" {
            lines += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    check_text(rest)?;
    if !rest.trim().is_empty() {
        bail!("text after the root element");
    }
    if let Some(open) = stack.last() {
        bail!("<{open}> is never closed");
    }
    if !root_seen {
        bail!("no root element");
    }
    if lines == 0 {
        bail!("nothing drawn (no <polyline> or <path>)");
    }
    Ok(())
}

/// The index of the `>` that ends the tag at the start of `s`, skipping
/// quoted attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

fn check_attributes(mut s: &str) -> anyhow::Result<()> {
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(());
        }
        let eq = s.find('=').context("an attribute without a value")?;
        let name = s[..eq].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            bail!("a bad attribute name {name:?}");
        }
        let v = s[eq + 1..].trim_start();
        let q = v.chars().next().context("an attribute without a value")?;
        if q != '"' && q != '\'' {
            bail!("attribute {name} is not quoted");
        }
        let end = v[1..].find(q).context("an unclosed attribute value")?;
        let value = &v[1..1 + end];
        if value.contains('<') {
            bail!("a '<' in attribute {name}");
        }
        check_text(value)?;
        s = &v[end + 2..];
    }
}

/// Every `&` starts an entity.
fn check_text(s: &str) -> anyhow::Result<()> {
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        let after = &rest[i + 1..];
        let semi = after.find(';').context("a bare '&'")?;
        let entity = &after[..semi];
        let ok = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
            || entity
                .strip_prefix("#x")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            || entity
                .strip_prefix('#')
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            bail!("an unknown entity &{entity};");
        }
        rest = &after[semi + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Curve {
        let mut c = Curve::new("sample", "Wall time & nodes", "nodes", &[10.0, 50.0, 200.0]);
        let a = c.column("rdrunner", "ms", 1);
        let b = c.column("xargs -P ssh <floor>", "ms", 1);
        for (i, v) in [100.0, 400.0, 1500.0].into_iter().enumerate() {
            c.set(a, i, v);
            c.set(b, i, v * 4.0);
        }
        c.panel("wall time (ms)", &[a, b], true);
        c
    }

    #[test]
    fn a_curve_renders_to_a_valid_svg_and_a_linked_table() {
        let c = sample();
        let svg = c.svg().unwrap();
        check_svg(&svg).unwrap();
        let md = c.markdown();
        assert!(md.contains("([plot](docs/bench/sample.svg))"), "{md}");
        assert!(md.contains("| 200 | 1500.0 | 6000.0 |"), "{md}");
    }

    #[test]
    fn malformed_svg_is_refused() {
        check_svg(r#"<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"/></svg>"#).unwrap();
        for bad in [
            r#"<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"></svg>"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg"><path d=M0/></svg>"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg"><text>a & b</text><path d="M"/></svg>"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg"></svg>"#,
            r#"<html><path d="M"/></html>"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg"><path d="M"/></svg><svg/>"#,
        ] {
            assert!(check_svg(bad).is_err(), "{bad}");
        }
    }
}
