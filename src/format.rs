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

/// A whole count with thousands separated: `691,200`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size for people: `512 B`, `64 KiB`, `1.5 MiB`, `2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", short_number(v, 1), UNITS[unit])
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
