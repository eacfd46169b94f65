//! How numbers are written for people: in reasons, tables and chart ticks.

/// At most `decimals` decimals, without trailing zeros: `57.2`, `89`, `0.125`; never `-0`.
pub fn short_number(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::short_number;

    #[test]
    fn numbers_are_short() {
        let cases = [
            (57.2, 3, "57.2"),
            (89.0, 3, "89"),
            (0.125, 3, "0.125"),
            (1.0 / 3.0, 3, "0.333"),
            (1.0 / 3.0, 2, "0.33"),
            (-0.0001, 3, "0"),
            (1500.0, 2, "1500"),
            (1500.0, 0, "1500"),
        ];
        for (v, d, want) in cases {
            assert_eq!(short_number(v, d), want, "{v} with {d}");
        }
    }
}
