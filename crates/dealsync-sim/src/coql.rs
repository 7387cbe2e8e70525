//! The subset of COQL the simulator understands: `select f, … | COUNT(id) from Deals where … [order by f
//! [asc|desc]] [limit [offset,] n]`, with `=`, `!=`, `<`, `<=`, `>`, `>=`, `in (…)`, `between … and …`,
//! `is [not] null`, `and`/`or` and parentheses. Enough for keyset paging and reconciliation counts.

use serde_json::json;

use super::criteria::{compile_condition, Compiled, Condition, Field, Op, QueryError};

#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    Fields(Vec<String>),
    CountId,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub select: Select,
    pub module: String,
    pub filter: Option<Compiled>,
    pub order_by: Option<(String, bool)>,
    pub offset: usize,
    pub limit: usize,
}

/// COQL returns at most this many rows per call, and pages no further than this offset.
pub const MAX_LIMIT: usize = 2000;
pub const MAX_OFFSET_PLUS_LIMIT: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

fn syntax(near: &str) -> QueryError {
    QueryError {
        code: "SYNTAX_ERROR",
        message: "error occured while parsing the query".into(),
        details: json!({"near": near}),
    }
}

fn tokenize(s: &str) -> Result<Vec<Tok>, QueryError> {
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match cs.get(i) {
                    None => return Err(syntax("unterminated string")),
                    Some('\'') if cs.get(i + 1) == Some(&'\'') => {
                        v.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        v.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if c.is_ascii_digit() || (c == '-' && cs.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            i += 1;
            while i < cs.len() && (cs[i].is_ascii_digit() || cs[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(cs[start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || matches!(cs[i], '_' | '$' | '.')) {
                i += 1;
            }
            out.push(Tok::Word(cs[start..i].iter().collect()));
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            let sym = match two.as_str() {
                ">=" => Some(">="),
                "<=" => Some("<="),
                "!=" => Some("!="),
                "<>" => Some("!="),
                _ => None,
            };
            if let Some(sym) = sym {
                out.push(Tok::Sym(sym));
                i += 2;
                continue;
            }
            let sym = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '*' => "*",
                _ => return Err(syntax(&c.to_string())),
            };
            out.push(Tok::Sym(sym));
            i += 1;
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    pos: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Tok::Word(w)) = self.peek() {
            if w.eq_ignore_ascii_case(kw) {
                self.pos += 1;
                return true;
            }
        }
        false
    }

    fn sym(&mut self, s: &str) -> bool {
        if self.peek()
            == Some(&Tok::Sym(match s {
                "(" => "(",
                ")" => ")",
                "," => ",",
                _ => return false,
            }))
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn near(&self) -> String {
        match self.peek() {
            Some(Tok::Word(w)) | Some(Tok::Num(w)) | Some(Tok::Str(w)) => w.clone(),
            Some(Tok::Sym(s)) => s.to_string(),
            None => "end of query".into(),
        }
    }

    fn word(&mut self) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(syntax(&self.near())),
        }
    }

    fn literal(&mut self) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Str(v)) | Some(Tok::Num(v)) => {
                self.pos += 1;
                Ok(v)
            }
            _ => Err(syntax(&self.near())),
        }
    }

    fn number(&mut self) -> Result<usize, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Num(v)) => {
                self.pos += 1;
                v.parse().map_err(|_| QueryError::invalid("limit given seems to be invalid", json!({"limit": v})))
            }
            _ => Err(syntax(&self.near())),
        }
    }

    fn or_expr(&mut self) -> Result<Compiled, QueryError> {
        let mut left = self.and_expr()?;
        while self.keyword("or") {
            let right = self.and_expr()?;
            left = Compiled::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Compiled, QueryError> {
        let mut left = self.term()?;
        while self.keyword("and") {
            let right = self.term()?;
            left = Compiled::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Compiled, QueryError> {
        if self.sym("(") {
            let e = self.or_expr()?;
            if !self.sym(")") {
                return Err(syntax(&self.near()));
            }
            return Ok(e);
        }
        let field = self.word()?;
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return Err(syntax(&self.near()));
            }
            let f = Field::parse(&field).ok_or_else(|| {
                QueryError::invalid("invalid query formed", json!({"api_name": field, "reason": "invalid field"}))
            })?;
            return Ok(Compiled::IsNull { field: f, negated });
        }
        let cond = |op: Op, values: Vec<String>| Condition { field: field.clone(), op, values };
        let c = if self.keyword("in") {
            if !self.sym("(") {
                return Err(syntax(&self.near()));
            }
            let mut values = vec![self.literal()?];
            while self.sym(",") {
                values.push(self.literal()?);
            }
            if !self.sym(")") {
                return Err(syntax(&self.near()));
            }
            cond(Op::In, values)
        } else if self.keyword("between") {
            let a = self.literal()?;
            if !self.keyword("and") {
                return Err(syntax(&self.near()));
            }
            let b = self.literal()?;
            cond(Op::Between, vec![a, b])
        } else {
            let op = match self.peek() {
                Some(Tok::Sym("=")) => Op::Equals,
                Some(Tok::Sym("!=")) => Op::NotEqual,
                Some(Tok::Sym(">")) => Op::GreaterThan,
                Some(Tok::Sym(">=")) => Op::GreaterEqual,
                Some(Tok::Sym("<")) => Op::LessThan,
                Some(Tok::Sym("<=")) => Op::LessEqual,
                _ => return Err(syntax(&self.near())),
            };
            self.pos += 1;
            cond(op, vec![self.literal()?])
        };
        compile_condition(&c, true)
    }
}

pub fn parse(s: &str) -> Result<Query, QueryError> {
    let mut p = P { toks: tokenize(s)?, pos: 0 };
    if !p.keyword("select") {
        return Err(syntax(&p.near()));
    }
    let select = if matches!(p.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("count")) {
        p.pos += 1;
        if !(p.sym("(") && p.word()? == "id" && p.sym(")")) {
            return Err(syntax(&p.near()));
        }
        Select::CountId
    } else {
        let mut fields = vec![p.word()?];
        while p.sym(",") {
            fields.push(p.word()?);
        }
        if fields.len() > 50 {
            return Err(QueryError {
                code: "LIMIT_EXCEEDED",
                message: "maximum limit of 50 fields".into(),
                details: json!({"limit": 50}),
            });
        }
        Select::Fields(fields)
    };
    if !p.keyword("from") {
        return Err(syntax(&p.near()));
    }
    let module = p.word()?;
    if module != "Deals" {
        return Err(QueryError {
            code: "INVALID_MODULE",
            message: "the module name given seems to be invalid".into(),
            details: json!({}),
        });
    }
    // COQL requires a WHERE clause.
    if !p.keyword("where") {
        return Err(syntax(&p.near()));
    }
    let filter = Some(p.or_expr()?);
    let mut order_by = None;
    if p.keyword("order") {
        if !p.keyword("by") {
            return Err(syntax(&p.near()));
        }
        let f = p.word()?;
        let asc = if p.keyword("desc") {
            false
        } else {
            p.keyword("asc");
            true
        };
        order_by = Some((f, asc));
    }
    let (mut offset, mut limit) = (0, 200);
    if p.keyword("limit") {
        let a = p.number()?;
        if p.sym(",") {
            offset = a;
            limit = p.number()?;
        } else {
            limit = a;
        }
        if p.keyword("offset") {
            offset = p.number()?;
        }
    }
    if p.pos != p.toks.len() {
        return Err(syntax(&p.near()));
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError {
            code: "LIMIT_EXCEEDED",
            message: format!("maximum limit of {MAX_LIMIT} records"),
            details: json!({"limit": MAX_LIMIT}),
        });
    }
    if offset + limit > MAX_OFFSET_PLUS_LIMIT {
        return Err(QueryError {
            code: "LIMIT_EXCEEDED",
            message: "Max records limit exceeded, only up to 10,000 records can be fetched".into(),
            details: json!({"limit": MAX_OFFSET_PLUS_LIMIT}),
        });
    }
    Ok(Query { select, module, filter, order_by, offset, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_keyset_query() {
        let q = parse(
            "select id, Amount from Deals where ((Stage = 'Closed Won' and Modified_Time >= '2026-01-01T00:00:00+05:30') and \
             (Modified_Time < '2026-01-01T00:00:01+05:30' and id > '17')) order by id asc limit 200",
        )
        .unwrap();
        assert_eq!(q.limit, 200);
        assert_eq!(q.order_by, Some(("id".to_string(), true)));
        assert!(matches!(q.select, Select::Fields(ref f) if f.contains(&"Amount".to_string())));
    }

    #[test]
    fn counts_and_offsets() {
        let q = parse("select COUNT(id) from Deals where Stage = 'Closed Won' limit 10, 100").unwrap();
        assert_eq!((q.select, q.offset, q.limit), (Select::CountId, 10, 100));
        assert_eq!(parse("select id from Deals where id > '1' limit 9999, 2").unwrap_err().code, "LIMIT_EXCEEDED");
        assert_eq!(parse("select id from Leads where id > '1'").unwrap_err().code, "INVALID_MODULE");
        assert_eq!(parse("select id frm Deals").unwrap_err().code, "SYNTAX_ERROR");
    }
}
