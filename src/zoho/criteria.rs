//! Search criteria and COQL queries, built as values and rendered in one place, so that escaping is done once and
//! can be checked against the simulator's parser. Criteria look like `((Stage:equals:Closed Won)and(…))`; inside a
//! value `(`, `)`, `,` and `\` are escaped with a backslash, and the HTTP client URL-encodes the whole string (so
//! `+` in an offset travels as `%2B`, never as a space).

use std::fmt;

use crate::schema::CLOSED_WON;
use crate::window::Window;

/// Rows per COQL request (Zoho's maximum): every id listing pages by this many.
pub const COQL_LIMIT: u32 = 2000;

/// The operators dealsync sends (and the property tests check against the simulator's parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equals,
    GreaterEqual,
    LessThan,
}

/// A criteria expression: `(field:operator:value)` terms combined pairwise with `and`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Cond(String, Op, String),
    And(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn cond(field: &str, op: Op, value: &str) -> Expr {
        Expr::Cond(field.to_string(), op, value.to_string())
    }

    pub fn and(self, other: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(other))
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Cond(field, op, value) => {
                let op = match op {
                    Op::Equals => "equals",
                    Op::GreaterEqual => "greater_equal",
                    Op::LessThan => "less_than",
                };
                write!(f, "({field}:{op}:{})", escape_value(value))
            }
            Expr::And(a, b) => write!(f, "({a}and{b})"),
        }
    }
}

/// Escapes one criteria value: a backslash before `(`, `)`, `,` and `\`.
pub fn escape_value(v: &str) -> String {
    v.chars().flat_map(|c| matches!(c, '(' | ')' | ',' | '\\').then_some('\\').into_iter().chain([c])).collect()
}

/// The search criteria for closed-won deals in a window: stage, then the half-open range on the window field.
pub fn closed_won_in(window: &Window) -> Expr {
    let field = window.field.api_name();
    let from = Expr::cond(field, Op::GreaterEqual, &window.start_str());
    let range = from.and(Expr::cond(field, Op::LessThan, &window.end_str()));
    Expr::cond("Stage", Op::Equals, CLOSED_WON).and(range)
}

/// The COQL conditions on a window: deals whose Stage compares with `stage_op` (`=` or `!=`) to "Closed Won",
/// and the window's start and end (joined by the caller: COQL wants two conditions per parenthesis).
fn coql_window(stage_op: &str, window: &Window) -> (String, String) {
    let field = window.field.api_name();
    let (start, end) = (coql_literal(&window.start_str()), coql_literal(&window.end_str()));
    (format!("Stage {stage_op} {} and {field} >= {start}", coql_literal(CLOSED_WON)), format!("{field} < {end}"))
}

/// One keyset page of a COQL query over a window: `columns` of the deals whose Stage compares with `stage_op`
/// (`=` or `!=`) to "Closed Won", with `id > after_id`, in id order, `COQL_LIMIT` of them.
pub fn coql_keyset_page(columns: &str, stage_op: &str, window: &Window, after_id: Option<&str>) -> String {
    let (stage_and_start, before_end) = coql_window(stage_op, window);
    let id_cond = after_id.map_or("id is not null".to_string(), |id| format!("id > {}", coql_literal(id)));
    let filter = format!("(({stage_and_start}) and ({before_end} and {id_cond}))");
    format!("select {columns} from Deals where {filter} order by id asc limit {COQL_LIMIT}")
}

/// Counts the deals whose stage is exactly "Closed Won" in a window (COQL compares exactly, unlike search).
pub fn coql_count_closed_won(window: &Window) -> String {
    let (stage_and_start, before_end) = coql_window("=", window);
    format!("select COUNT(id) from Deals where (({stage_and_start}) and {before_end})")
}

/// A COQL string literal: single quotes, an inner quote doubled.
pub fn coql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{Window, WindowField};
    use chrono::DateTime;

    #[test]
    fn renders_the_documented_shape() {
        let e = Expr::cond("Last_Name", Op::Equals, "Burns,B").and(Expr::cond("First_Name", Op::LessThan, "M"));
        assert_eq!(e.to_string(), r"((Last_Name:equals:Burns\,B)and(First_Name:less_than:M))");
    }

    #[test]
    fn escapes_parentheses_commas_and_backslashes() {
        assert_eq!(escape_value(r"a(b)c,d\"), r"a\(b\)c\,d\\");
    }

    #[test]
    fn window_criteria_keep_the_offset() {
        let w = Window::new(
            WindowField::ModifiedTime,
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00+05:30").unwrap(),
            DateTime::parse_from_rfc3339("2026-02-01T00:00:00+05:30").unwrap(),
        )
        .unwrap();
        assert_eq!(
            closed_won_in(&w).to_string(),
            "((Stage:equals:Closed Won)and((Modified_Time:greater_equal:2026-01-01T00:00:00+05:30)\
             and(Modified_Time:less_than:2026-02-01T00:00:00+05:30)))"
        );
    }

    #[test]
    fn coql_pages_by_id() {
        let w = Window::new(
            WindowField::ClosingDate,
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z").unwrap(),
        )
        .unwrap();
        let q = coql_keyset_page("id", "=", &w, Some("42"));
        assert!(q.ends_with(
            "where ((Stage = 'Closed Won' and Closing_Date >= '2026-01-01') and (Closing_Date < '2026-01-02' and id > '42')) order by id asc limit 2000"
        ), "{q}");
        assert_eq!(coql_literal("O'Brien"), "'O''Brien'");
    }
}
