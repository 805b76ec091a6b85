//! GetMetricData's metric math, the arithmetic part: numbers, the ids of other queries,
//! `+ - * /`, unary minus and parentheses (`100 * errors / invocations`). A series is a list
//! of `(timestamp, value)`; operations between series keep the timestamps both have, a scalar
//! applies to every point, and a division by zero drops the point (as CloudWatch omits it).
//! Functions (`SUM`, `METRICS()`, `FILL`, ...) and Metrics Insights are not supported.

use std::collections::BTreeMap;

/// A series by timestamp.
pub(crate) type Series = BTreeMap<i64, f64>;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Id(String),
    Op(char),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            '+' | '-' | '*' | '/' => {
                out.push(Token::Op(c));
                chars.next();
            }
            '(' => {
                out.push(Token::Open);
                chars.next();
            }
            ')' => {
                out.push(Token::Close);
                chars.next();
            }
            '0'..='9' | '.' => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let number = text[i..end]
                    .parse()
                    .map_err(|_| format!("'{}' is not a number", &text[i..end]))?;
                out.push(Token::Number(number));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Id(text[i..end].to_owned()));
            }
            other => return Err(format!("unexpected '{other}'")),
        }
    }
    Ok(out)
}

/// A value during evaluation: a scalar or a series.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Scalar(f64),
    Series(Series),
}

fn apply(op: char, a: f64, b: f64) -> Option<f64> {
    let v = match op {
        '+' => a + b,
        '-' => a - b,
        '*' => a * b,
        _ if b == 0.0 => return None,
        _ => a / b,
    };
    v.is_finite().then_some(v)
}

fn combine(op: char, left: Value, right: Value) -> Value {
    match (left, right) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            apply(op, a, b).map_or_else(|| Value::Series(Series::new()), Value::Scalar)
        }
        (Value::Series(s), Value::Scalar(b)) => Value::Series(
            s.into_iter()
                .filter_map(|(t, a)| Some((t, apply(op, a, b)?)))
                .collect(),
        ),
        (Value::Scalar(a), Value::Series(s)) => Value::Series(
            s.into_iter()
                .filter_map(|(t, b)| Some((t, apply(op, a, b)?)))
                .collect(),
        ),
        (Value::Series(l), Value::Series(r)) => Value::Series(
            l.into_iter()
                .filter_map(|(t, a)| Some((t, apply(op, a, *r.get(&t)?)?)))
                .collect(),
        ),
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    series: &'a BTreeMap<String, Series>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// sum := product (('+' | '-') product)*
    fn sum(&mut self) -> Result<Value, String> {
        let mut value = self.product()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.next();
            value = combine(op, value, self.product()?);
        }
        Ok(value)
    }

    /// product := unary (('*' | '/') unary)*
    fn product(&mut self) -> Result<Value, String> {
        let mut value = self.unary()?;
        while let Some(Token::Op(op @ ('*' | '/'))) = self.peek().cloned() {
            self.next();
            value = combine(op, value, self.unary()?);
        }
        Ok(value)
    }

    /// unary := '-' unary | atom
    fn unary(&mut self) -> Result<Value, String> {
        if self.peek() == Some(&Token::Op('-')) {
            self.next();
            return Ok(combine('*', Value::Scalar(-1.0), self.unary()?));
        }
        self.atom()
    }

    /// atom := number | id | '(' sum ')'
    fn atom(&mut self) -> Result<Value, String> {
        match self.next() {
            Some(Token::Number(n)) => Ok(Value::Scalar(n)),
            Some(Token::Id(id)) => match self.series.get(&id) {
                Some(s) => Ok(Value::Series(s.clone())),
                None if self.peek() == Some(&Token::Open) => Err(format!(
                    "the function {id}() is not supported: use + - * / on query ids"
                )),
                None => Err(format!(
                    "'{id}' is not the id of an earlier query in MetricDataQueries"
                )),
            },
            Some(Token::Open) => {
                let value = self.sum()?;
                match self.next() {
                    Some(Token::Close) => Ok(value),
                    _ => Err("a '(' is not closed".to_owned()),
                }
            }
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("the expression ends too early".to_owned()),
        }
    }
}

/// Evaluates `expression` over the `series` of earlier queries. A scalar result is a series
/// with the timestamps of `timestamps`.
pub(crate) fn evaluate(
    expression: &str,
    series: &BTreeMap<String, Series>,
    timestamps: &[i64],
) -> Result<Series, String> {
    if expression.len() > 2048 {
        return Err("the expression is longer than 2048 characters".to_owned());
    }
    let mut parser = Parser {
        tokens: tokens(expression)?,
        at: 0,
        series,
    };
    let value = parser.sum()?;
    if let Some(extra) = parser.peek() {
        return Err(format!("unexpected {extra:?} after the expression"));
    }
    Ok(match value {
        Value::Series(s) => s,
        Value::Scalar(v) => timestamps.iter().map(|t| (*t, v)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, f64)]) -> Series {
        points.iter().copied().collect()
    }

    #[test]
    fn arithmetic_over_aligned_series() {
        let mut by_id = BTreeMap::new();
        by_id.insert(
            "errors".to_owned(),
            series(&[(0, 1.0), (60, 0.0), (120, 3.0)]),
        );
        by_id.insert("inv".to_owned(), series(&[(0, 4.0), (60, 0.0), (180, 9.0)]));
        let rate = evaluate("100 * errors / inv", &by_id, &[]).unwrap();
        assert_eq!(
            rate,
            series(&[(0, 25.0)]),
            "only shared timestamps; 0/0 dropped"
        );
        let sum = evaluate("(errors + inv) - -1", &by_id, &[]).unwrap();
        assert_eq!(sum, series(&[(0, 6.0), (60, 1.0)]));
        assert_eq!(
            evaluate("2 * 3", &by_id, &[0, 60]).unwrap(),
            series(&[(0, 6.0), (60, 6.0)])
        );
        assert_eq!(
            evaluate("1 + 2 * 3 - 4 / 2", &by_id, &[0]).unwrap(),
            series(&[(0, 5.0)])
        );
    }

    #[test]
    fn mistakes_are_named() {
        let by_id = BTreeMap::new();
        for (expr, says) in [
            ("nope * 2", "not the id"),
            ("SUM(METRICS())", "not supported"),
            ("(1 + 2", "not closed"),
            ("1 +", "ends too early"),
            ("1 2", "after the expression"),
            ("1 % 2", "unexpected '%'"),
        ] {
            let err = evaluate(expr, &by_id, &[]).unwrap_err();
            assert!(err.contains(says), "{expr}: {err}");
        }
    }
}
