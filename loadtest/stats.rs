//! Percentiles over recorded samples, and the report every scenario prints: a table for people,
//! then one JSON line for BENCHMARKS.md.

use serde_json::{Value, json};

/// Recorded values (milliseconds, usually). Percentiles sort them once and take the nearest rank,
/// as HdrHistogram reports them, without its bucketing error.
#[derive(Default)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self { values: Vec::with_capacity(n) }
    }

    pub fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    pub fn append(&mut self, other: Samples) {
        self.values.extend(other.values);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn summary(mut self) -> Summary {
        self.values.retain(|v| v.is_finite());
        if self.is_empty() {
            return Summary::default();
        }
        self.values.sort_by(f64::total_cmp);
        let v = &self.values;
        Summary {
            count: v.len(),
            p50: nearest_rank(v, 50.0),
            p95: nearest_rank(v, 95.0),
            p99: nearest_rank(v, 99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// The smallest value with at least `q` percent of the (sorted, non-empty) values at or below it.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn json(&self) -> Value {
        json!({ "count": self.count, "p50": round(self.p50), "p95": round(self.p95), "p99": round(self.p99),
                "max": round(self.max), "mean": round(self.mean) })
    }
}

/// Three decimals: enough for milliseconds, short in the JSON line.
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

pub fn per_s(v: f64) -> String {
    format!("{v:.0}/s")
}

/// `a / b` for the ratio column, or a dash when there is nothing to divide by.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}x", a / b) } else { "-".into() }
}

/// A scenario's result: rows under named columns, notes below them, and the JSON line.
pub struct Report {
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
    json: Value,
}

impl Report {
    pub fn new(title: impl Into<String>, columns: &[&str], json: Value) -> Self {
        Self { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: vec![], notes: vec![], json }
    }

    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        let columns = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            println!("  {}", padded.join("  ").trim_end());
        };
        println!("\n{}", self.title);
        line(&self.columns);
        line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
        for row in &self.rows {
            line(row);
        }
        for note in &self.notes {
            println!("  * {note}");
        }
        println!("\n{}", self.json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut s = Samples::default();
        for v in (1..=100).rev() {
            s.push(v as f64);
        }
        let sum = s.summary();
        assert_eq!((sum.count, sum.p50, sum.p95, sum.p99, sum.max), (100, 50.0, 95.0, 99.0, 100.0));
        assert_eq!(sum.mean, 50.5);
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_zero() {
        let mut s = Samples::default();
        s.push(7.0);
        let one = s.summary();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Samples::default().summary().count, 0);
    }

    #[test]
    fn ratio_needs_a_divisor() {
        assert_eq!(ratio(3.0, 2.0), "1.50x");
        assert_eq!(ratio(3.0, 0.0), "-");
    }
}
