//! Field readers the rule kinds share: a fraction, a count.

use crate::read::yaml::Node;
use crate::read::{Cx, FromNode};

/// A fraction written as `10%` or `0.1`.
pub(super) fn read_fraction(n: &Node, p: &str, cx: &mut Cx) -> Option<f64> {
    let s = n.as_scalar().unwrap_or_default().trim();
    let v = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|v| v / 100.0),
        None => s.parse::<f64>().ok().filter(|v| *v <= 1.0),
    };
    match v {
        Some(v) if (0.0..1.0).contains(&v) => Some(v),
        _ => {
            cx.error(
                n.span,
                p,
                format!(
                    "expected a fraction such as 10% or 0.1 (below 100%), found {}",
                    n.describe()
                ),
            );
            None
        }
    }
}

/// A whole number of at least 1.
pub(super) fn read_count(n: &Node, p: &str, cx: &mut Cx) -> Option<usize> {
    let v = usize::from_node(n, p, cx)?;
    if (1..=10_000).contains(&v) {
        Some(v)
    } else {
        cx.error(n.span, p, format!("must be between 1 and 10000, found {v}"));
        None
    }
}
