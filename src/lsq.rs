//! The least-squares line through points, for the rules' trends and the twin's fits.

/// `y = a + b·x` through some points, with the sums it was found from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub a: f64,
    pub b: f64,
    n: f64,
    mx: f64,
    sxx: f64,
    syy: f64,
    sxy: f64,
    /// Σ (y − a − b·x)².
    rss: f64,
}

impl Line {
    /// The line through `points`: `None` for fewer than three, or when every x is the same.
    pub fn through(points: &[(f64, f64)]) -> Option<Line> {
        let n = points.len() as f64;
        if points.len() < 3 {
            return None;
        }
        let (mx, my) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let syy: f64 = points.iter().map(|(_, y)| (y - my).powi(2)).sum();
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let b = sxy / sxx;
        let a = my - b * mx;
        let rss = points.iter().map(|(x, y)| (y - a - b * x).powi(2)).sum();
        Some(Line {
            a,
            b,
            n,
            mx,
            sxx,
            syy,
            sxy,
            rss,
        })
    }

    /// The share of y's variation the line explains; `None` when y does not vary.
    pub fn r2(&self) -> Option<f64> {
        (self.syy > 0.0).then(|| self.sxy * self.sxy / (self.sxx * self.syy))
    }

    /// The standard errors of `a` and `b`.
    pub fn standard_errors(&self) -> (f64, f64) {
        let s2 = self.rss / (self.n - 2.0);
        let se_b = (s2 / self.sxx).sqrt();
        let se_a = (s2 * (1.0 / self.n + self.mx * self.mx / self.sxx)).sqrt();
        (se_a, se_b)
    }
}
