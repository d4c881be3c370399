//! Aligned text tables for the CLI's listings (`sluice costs`, `sluice prices`,
//! `sluice budgets`).
//!
//! One renderer, so the three commands lay out their columns the same way and a fix to the
//! layout (widths, alignment, trailing space) is made once: every column as wide as its
//! widest cell (the header included), two spaces between columns, the leading text columns
//! left-aligned and the numbers after them right-aligned so their digits line up (decimals
//! padded with zeros to the longest fraction of their column, so amounts written by
//! `PicoUsd::for_reading` stay exact and line up on the point), no trailing space on a
//! line, and optionally a rule of dashes above a totals line.

/// A table being filled: a header, then rows of cells as they will be shown.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    /// How many leading columns hold text (left-aligned); the rest hold numbers
    /// (right-aligned).
    text_columns: usize,
    rows: Vec<Vec<String>>,
    /// A rule is drawn above the row at this index.
    rule_above: Option<usize>,
}

impl Table {
    /// A table with these column names, the first `text_columns` of them text and the rest
    /// numbers.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>, text_columns: usize) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            text_columns,
            rows: Vec::new(),
            rule_above: None,
        }
    }

    /// Adds a row: one cell per column.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells: Vec<String> = cells.into_iter().collect();
        debug_assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// Draws a rule between the rows added so far and the next one (a totals line).
    pub fn rule(&mut self) {
        self.rule_above = Some(self.rows.len());
    }

    /// The table as text, one line per row after the header, each ending in a newline.
    pub fn render(&self) -> String {
        let rows = self.decimals_lined_up();
        // Widths in characters, not bytes, so a non-ASCII tag value does not skew a column.
        let width = |cell: &str| cell.chars().count();
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| width(&r[i]))
                    .chain([width(&self.header[i])])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, &w))| {
                    if i < self.text_columns {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        };
        line(&mut out, &self.header);
        for (n, row) in rows.iter().enumerate() {
            if self.rule_above == Some(n) {
                let rule = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                out.push_str(&"-".repeat(rule));
                out.push('\n');
            }
            line(&mut out, row);
        }
        out
    }

    /// The rows with each number column's decimals padded with zeros to the longest
    /// fraction in that column (`0.0007` beside `0.0000234` becomes `0.0007000`). Cells that
    /// are not decimal numbers (`-`, `12.5%`) are left as they are.
    fn decimals_lined_up(&self) -> Vec<Vec<String>> {
        let fraction = |cell: &str| {
            let (whole, frac) = cell.split_once('.')?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let whole = whole.strip_prefix('-').unwrap_or(whole);
            (digits(whole) && digits(frac)).then_some(frac.len())
        };
        let mut rows = self.rows.clone();
        for column in self.text_columns..self.header.len() {
            let longest = rows.iter().filter_map(|r| fraction(&r[column])).max();
            let Some(longest) = longest else { continue };
            for row in &mut rows {
                if let Some(len) = fraction(&row[column]) {
                    row[column].push_str(&"0".repeat(longest - len));
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_left_numbers_right_and_a_rule_above_the_total() {
        let mut table = Table::new(["team", "requests", "cost"], 1);
        table.row(["a".to_string(), "12".into(), "0.5".into()]);
        table.row(["ünïcode".to_string(), "3".into(), "10.25".into()]);
        table.rule();
        table.row(["TOTAL".to_string(), "15".into(), "10.75".into()]);
        assert_eq!(
            table.render(),
            "team     requests   cost\n\
             a              12   0.50\n\
             ünïcode         3  10.25\n\
             ------------------------\n\
             TOTAL          15  10.75\n"
        );
    }

    #[test]
    fn amounts_line_up_on_the_point_and_other_cells_stay() {
        let mut table = Table::new(["cost", "share", "price"], 0);
        table.row(["0.0007".to_string(), "12.5%".into(), "-".into()]);
        table.row(["0.0000234".to_string(), "7%".into(), "2.50".into()]);
        table.row(["-1.5".to_string(), "-".into(), "0.075".into()]);
        assert_eq!(
            table.render(),
            concat!(
                "      cost  share  price\n",
                " 0.0007000  12.5%      -\n",
                " 0.0000234     7%  2.500\n",
                "-1.5000000      -  0.075\n",
            )
        );
    }

    #[test]
    fn trailing_space_is_trimmed_and_all_text_columns_stay_left() {
        let mut table = Table::new(["name", "note"], 2);
        table.row(["long name".to_string(), String::new()]);
        assert_eq!(table.render(), "name       note\nlong name\n");
    }
}
