//! How numbers are written for people: in reasons, tables and chart ticks.

/// At most `decimals` decimals, without trailing zeros: `57.2`, `89`, `0.125`; never `-0`.
pub fn short_number(v: f64, decimals: usize) -> String {
    Short(v, decimals).to_string()
}

/// [`short_number`] as a value to write (`format!("{}", Short(v, 2))`), with no string of its
/// own in between.
#[derive(Debug, Clone, Copy)]
pub struct Short(pub f64, pub usize);

impl Short {
    /// Written into one buffer and handed over in one piece: each piece handed to a formatter
    /// costs more than the digits themselves.
    fn write(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match self.digits() {
            Some((buf, at)) => out.write_str(ascii(&buf[at..])),
            None => out.write_str(&exact_short_number(self.0, self.1)),
        }
    }

    /// The characters in a buffer, from the index returned; `None` when only the exact
    /// expansion can tell how the value rounds.
    fn digits(&self) -> Option<([u8; 28], usize)> {
        let Short(v, decimals) = *self;
        let (negative, whole, frac, digits) = fast_parts(v, decimals)?;
        // A sign, 20 digits, a point and 6 decimals at most.
        let mut buf = [0u8; 28];
        let mut at = buf.len();
        if digits > 0 {
            at = put_digits(&mut buf, at, frac, digits) - 1;
            buf[at] = b'.';
        }
        at = put_digits(&mut buf, at, whole, 1);
        if negative {
            at -= 1;
            buf[at] = b'-';
        }
        Some((buf, at))
    }
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.width().is_none() {
            return self.write(f);
        }
        // Padded: written whole first.
        let mut s = String::new();
        self.write(&mut s)?;
        f.pad(&s)
    }
}

/// A part of a reason, written straight onto its string by `text!` and
/// `push_text!`. Reasons are written for every rule of every target every
/// tick, and handing each part to the formatting machinery (`format!`, `write!`) costs several
/// times what writing its characters does.
pub trait Piece {
    /// About how many bytes it takes, to size the string once.
    fn size(&self) -> usize {
        8
    }
    fn put(&self, out: &mut String);
}

impl Piece for str {
    fn size(&self) -> usize {
        self.len()
    }
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for String {
    fn size(&self) -> usize {
        self.len()
    }
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for std::sync::Arc<str> {
    fn size(&self) -> usize {
        self.len()
    }
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl<T: Piece + ?Sized> Piece for &T {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn put(&self, out: &mut String) {
        (**self).put(out);
    }
}

impl Piece for u64 {
    fn put(&self, out: &mut String) {
        let mut buf = [0u8; 20];
        let at = put_digits(&mut buf, 20, *self, 1);
        push_ascii(out, &buf[at..]);
    }
}

impl Piece for u32 {
    fn put(&self, out: &mut String) {
        u64::from(*self).put(out);
    }
}

impl Piece for usize {
    fn put(&self, out: &mut String) {
        (*self as u64).put(out);
    }
}

/// An integer with its sign always written: `+2`, `-1`, `+0`.
#[derive(Debug, Clone, Copy)]
pub struct Signed(pub i64);

impl Piece for Signed {
    fn put(&self, out: &mut String) {
        out.push(if self.0 < 0 { '-' } else { '+' });
        self.0.unsigned_abs().put(out);
    }
}

impl Piece for Short {
    fn put(&self, out: &mut String) {
        match self.digits() {
            Some((buf, at)) => push_ascii(out, &buf[at..]),
            None => out.push_str(&exact_short_number(self.0, self.1)),
        }
    }
}

impl Piece for Clock {
    fn put(&self, out: &mut String) {
        push_ascii(out, &self.digits());
    }
}

/// A few ASCII bytes pushed one by one: for a handful of digits, cheaper than checking them as
/// UTF-8 and copying them in one call.
fn push_ascii(out: &mut String, bytes: &[u8]) {
    out.extend(bytes.iter().map(|&b| char::from(b)));
}

/// The pieces written one after another onto a string sized for them; see `text!`.
pub fn joined(pieces: &impl Pieces) -> String {
    let mut out = String::with_capacity(pieces.size());
    pieces.put(&mut out);
    out
}

/// The pieces appended to `out`; see `push_text!`.
pub fn push_pieces(out: &mut String, pieces: &impl Pieces) {
    out.reserve(pieces.size());
    pieces.put(out);
}

/// [`Piece`]s in order, as `text!` gathers them (a tuple of references): sized, then written,
/// each by its own type's code rather than through a table of functions.
pub trait Pieces {
    fn size(&self) -> usize;
    fn put(&self, out: &mut String);
}

macro_rules! tuple_pieces {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Piece + ?Sized),+> Pieces for ($(&$t,)+) {
            fn size(&self) -> usize {
                0 $(+ self.$i.size())+
            }
            fn put(&self, out: &mut String) {
                $(self.$i.put(out);)+
            }
        }
    };
}

tuple_pieces!(A 0);
tuple_pieces!(A 0, B 1);
tuple_pieces!(A 0, B 1, C 2);
tuple_pieces!(A 0, B 1, C 2, D 3);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14);
tuple_pieces!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11, M 12, N 13, O 14, P 15);

/// A string of [`Piece`]s, as `format!` would write them with `{}`:
/// `text! {metric, " ", num(v), " ≥ ", num(bound), " for ", n, "/", m, " datapoints"}` (in
/// braces, which rustfmt leaves as written). At most 16 pieces.
macro_rules! text {
    ($($piece:expr),+ $(,)?) => {
        $crate::format::joined(&($(&$piece,)+))
    };
}

/// `text!`'s pieces appended to a string: `push_text! {reason; "; ", more}`.
macro_rules! push_text {
    ($out:expr; $($piece:expr),+ $(,)?) => {
        $crate::format::push_pieces(&mut $out, &($(&$piece,)+))
    };
}

// Used by path (`use crate::format::text`), as functions are.
pub(crate) use {push_text, text};

/// Writes `n` in decimal, zero-padded to `width` digits, to end just before `buf[end]`; returns
/// where it starts. Without the formatting machinery: its padding logic is most of the cost of
/// a short integer, and reasons are full of them.
fn put_digits(buf: &mut [u8], end: usize, mut n: u64, width: usize) -> usize {
    let mut at = end;
    while n > 0 || end - at < width.max(1) {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    at
}

/// `n` split at its last `decimals` digits (at most 6): a division by a constant for each,
/// which compiles to a multiplication, where one by a variable is a slow instruction.
fn split_decimals(n: u64, decimals: usize) -> (u64, u64) {
    match decimals {
        0 => (n, 0),
        1 => (n / 10, n % 10),
        2 => (n / 100, n % 100),
        3 => (n / 1_000, n % 1_000),
        4 => (n / 10_000, n % 10_000),
        5 => (n / 100_000, n % 100_000),
        _ => (n / 1_000_000, n % 1_000_000),
    }
}

/// Bytes [`put_digits`] and the writers here filled: ASCII only.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// [`short_number`] in integers (sign, whole part, decimals, their number), when that is sure
/// to round as the exact decimal expansion does: the value scaled by 10^decimals is well within
/// an integer's precision and not near a half. Every reason of every decision is written with
/// it, so it is on the engine's hot path; `format!("{v:.2}")` computes the exact expansion, ten
/// times slower.
fn fast_parts(v: f64, decimals: usize) -> Option<(bool, u64, u64, usize)> {
    const POW10: [f64; 7] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6];
    let scale = *POW10.get(decimals)?;
    let scaled = v.abs() * scale;
    if !scaled.is_finite() || scaled >= 1e12 {
        return None;
    }
    // Below 10^12 the conversion truncates, which is the floor here, and the fraction left is
    // exact: no call to a rounding routine.
    let floor = scaled as u64;
    let fraction = scaled - floor as f64;
    // Far enough from a half that the product's rounding error cannot decide.
    if (fraction - 0.5).abs() < 1e-9 + scaled * 1e-14 {
        return None;
    }
    let n = floor + u64::from(fraction > 0.5);
    let (whole, mut frac) = split_decimals(n, decimals);
    // Trailing zeros of the decimals dropped.
    let mut digits = if frac == 0 { 0 } else { decimals };
    while digits > 0 && frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    Some((v < 0.0 && n != 0, whole, frac, digits))
}

fn exact_short_number(v: f64, decimals: usize) -> String {
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

/// The time of day of `t`, `HH:MM:SS` (written directly: chrono's format string is parsed
/// again on every call, and reasons are written for every target every tick).
pub fn clock(t: chrono::DateTime<chrono::Utc>) -> Clock {
    Clock(t)
}

/// [`clock`]'s time of day, written where it is displayed (no string of its own).
#[derive(Debug, Clone, Copy)]
pub struct Clock(chrono::DateTime<chrono::Utc>);

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ascii(&self.digits()))
    }
}

impl Clock {
    fn digits(&self) -> [u8; 8] {
        use chrono::Timelike;
        let s = self.0.num_seconds_from_midnight();
        let mut buf = *b"00:00:00";
        put_digits(&mut buf, 2, (s / 3600).into(), 2);
        put_digits(&mut buf, 5, (s / 60 % 60).into(), 2);
        put_digits(&mut buf, 8, (s % 60).into(), 2);
        buf
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
    fn padded_numbers_are_padded_whole() {
        assert_eq!(format!("[{:>6}]", super::Short(57.25, 1)), "[  57.2]");
        assert_eq!(format!("[{:<5}]", super::Short(-3.0, 2)), "[-3   ]");
        assert_eq!(
            super::clock("2026-12-06T07:04:09Z".parse().unwrap()).to_string(),
            "07:04:09"
        );
        assert_eq!(
            super::clock("2026-12-06T00:00:00Z".parse().unwrap()).to_string(),
            "00:00:00"
        );
        assert_eq!(
            super::clock("2026-12-06T23:59:59Z".parse().unwrap()).to_string(),
            "23:59:59"
        );
    }

    #[test]
    fn edge_pieces_are_written_as_the_formatter_writes_them() {
        use super::Signed;
        for i in [i64::MIN, -10, -1, 0, 1, 9, i64::MAX] {
            assert_eq!(crate::format::text!(Signed(i)), format!("{i:+}"));
        }
        for n in [0, 9, 10, u64::MAX] {
            assert_eq!(
                crate::format::text!(n, "|", n as u32, "|", n as usize),
                format!("{n}|{}|{}", n as u32, n as usize)
            );
        }
    }

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

    proptest::proptest! {
        /// The integer path writes what the exact expansion writes, on values of every size,
        /// halves and near-halves included.
        #[test]
        fn the_fast_path_writes_what_the_exact_one_does(
            mantissa in -2_000_000_000i64..2_000_000_000,
            exp in -9i32..6,
            nudge in -3i64..=3,
            d in 0usize..7,
        ) {
            let v = mantissa as f64 * 10f64.powi(exp);
            let near_half = (mantissa as f64 + 0.5) / 10f64.powi(d as i32);
            for v in [v, near_half, f64::from_bits((near_half.to_bits() as i64 + nudge) as u64)] {
                proptest::prop_assert_eq!(short_number(v, d), super::exact_short_number(v, d), "{} with {}", v, d);
            }
        }

        /// Pieces write what `format!` writes with `{}` (`{:+}` for a signed count), one after
        /// another, onto a new string or the end of one.
        #[test]
        fn pieces_write_what_the_formatter_writes(
            n in proptest::prelude::any::<u64>(),
            i in proptest::prelude::any::<i64>(),
            small in proptest::prelude::any::<u32>(),
            v in -1e13f64..1e13,
            d in 0usize..8,
            secs in 0i64..4_000_000_000,
            head in "[a-zé →]{0,12}",
        ) {
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
            let short = super::Short(v, d);
            let written = crate::format::text!(head, n, " ", short, "/", small, " ", super::Signed(i), "@", super::clock(t), d);
            let want = format!("{head}{n} {short}/{small} {i:+}@{}{d}", super::clock(t));
            proptest::prop_assert_eq!(&written, &want);
            let mut appended = head.clone();
            crate::format::push_text!(appended; n, " ", short);
            proptest::prop_assert_eq!(appended, format!("{head}{n} {short}"));
        }
    }
}
